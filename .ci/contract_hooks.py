"""Schemathesis hooks for .ci/contract.

A real client sends a new Idempotency-Key with each new request; schemathesis
would repeat one generated key with different bodies and (rightly) get 422
idempotency_conflict. A well-formed key is replaced by a fresh one; a
malformed key is left as generated, so the server's refusal is still tested.
"""

import re
import uuid

import schemathesis

WELL_FORMED = re.compile(r"[\x21-\x7e]{1,255}")


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key" and isinstance(headers[name], str) and WELL_FORMED.fullmatch(headers[name]):
            headers[name] = str(uuid.uuid4())
