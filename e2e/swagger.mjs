// Create, approve and receive a purchase order by clicking through Swagger UI
// in a real headless Chromium, as an integrator would, then check that the
// order, the stock, its movements and the ledger agree.
//
//   cargo run --release &                   # a Nexus on http://127.0.0.1:8080
//   cd e2e && npm ci && npm run swagger     # CHROMIUM=/usr/bin/chromium by default
//
// Only the sign-up happens outside the browser; every other call is a
// "Try it out" / "Execute" in Swagger UI, its answer read from the page.

import { chromium } from "playwright-core";

const BASE = process.env.NEXUS_URL ?? "http://127.0.0.1:8080";
const run = Date.now().toString(36);

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

async function signUp() {
  const post = (path, body) =>
    fetch(`${BASE}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  const account = { email: `buyer-${run}@example.com`, password: "correct horse 42" };
  const registered = await post("/api/v1/auth/register", {
    tenant_name: `Swagger ${run}`, tenant_slug: `swagger-${run}`, name: "Bea Buyer", ...account,
  });
  check(registered.status === 201, `registered tenant swagger-${run}`);
  const login = await post("/api/v1/auth/login", { tenant: `swagger-${run}`, ...account });
  const session = await login.json();
  check(login.status === 200, "logged in");
  return session.data?.token ?? session.token;
}

/// Expand an operation, fill it in, press Execute, and return the answer
/// Swagger UI shows: its status and parsed body.
async function execute(page, tag, operationId, { params = {}, body, screenshot } = {}) {
  const op = page.locator(`#operations-${tag}-${operationId}`);
  await op.scrollIntoViewIfNeeded();
  if (!(await op.locator(".opblock-body").isVisible())) {
    await op.locator(".opblock-summary").first().click();
  }
  const tryOut = op.getByRole("button", { name: "Try it out" });
  if (await tryOut.count()) await tryOut.click();
  for (const [name, value] of Object.entries(params)) {
    await op.locator(`tr[data-param-name="${name}"] input`).fill(value);
  }
  if (body !== undefined) {
    await op.locator("textarea.body-param__text").fill(JSON.stringify(body, null, 2));
  }
  await op.locator("button.execute").click();
  const status = op.locator(".live-responses-table .response .response-col_status").first();
  await status.waitFor();
  const code = Number((await status.innerText()).trim());
  const text = await op.locator(".live-responses-table .response-col_description pre.microlight").first().innerText();
  if (screenshot) await op.screenshot({ path: screenshot });
  // Leave the operation clean for its next use.
  const clear = op.locator("button.btn-clear");
  if (await clear.isVisible()) await clear.click();
  return { status: code, body: JSON.parse(text) };
}

const token = await signUp();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage();
  await page.goto(`${BASE}/api/documentation/`);
  await page.locator(".information-container .title").waitFor();
  check((await page.locator(".information-container .title").innerText()).includes("Nexus"), "Swagger UI shows the Nexus API");

  // Authorize with the bearer token, as the dialog asks.
  await page.locator("button.authorize").first().click();
  await page.locator(".auth-container input[type=text], .auth-container input[type=password]").first().fill(token);
  await page.locator(".auth-btn-wrapper button.authorize").click();
  await page.locator(".auth-btn-wrapper button", { hasText: "Close" }).click();

  const warehouse = await execute(page, "inventory", "create_warehouse", { body: { code: "MAIN", name: "Main warehouse" } });
  check(warehouse.status === 201, "POST /warehouses answers 201");
  const product = await execute(page, "inventory", "create_product", {
    body: { sku: "BOLT-M8", name: "Bolt M8", unit_price: 90, currency: "EUR" },
  });
  check(product.status === 201, "POST /products answers 201");
  const vendor = await execute(page, "procurement", "create_vendor", { body: { name: "Acme Supplies", currency: "EUR" } });
  check(vendor.status === 201, "POST /vendors answers 201");

  const created = await execute(page, "procurement", "create_purchase_order", {
    body: {
      vendor_id: vendor.body.data.id,
      warehouse_id: warehouse.body.data.id,
      lines: [{ product_id: product.body.data.id, quantity: 100, unit_cost: 45 }],
    },
  });
  check(created.status === 201 && created.body.data.status === "draft", "POST /purchase-orders drafts the order");
  check(created.body.data.total === 4500, "the server computed the total, 4500");
  const id = created.body.data.id;

  for (const [operation, status] of [["submit_purchase_order", "submitted"], ["approve_purchase_order", "approved"]]) {
    const moved = await execute(page, "procurement", operation, { params: { id } });
    check(moved.status === 200 && moved.body.data.status === status, `${operation} leaves the order ${status}`);
  }
  const line = created.body.data.lines[0].id;
  const partial = await execute(page, "procurement", "receive_goods", {
    params: { id }, body: { lines: [{ line_id: line, quantity: 40 }] },
  });
  check(partial.body.data.status === "partially_received", "receiving 40 of 100 leaves it partially_received");
  const over = await execute(page, "procurement", "receive_goods", {
    params: { id }, body: { lines: [{ line_id: line, quantity: 61 }] },
  });
  check(over.status === 422 && over.body.code === "validation_failed", "receiving 61 more is refused (422)");
  const rest = await execute(page, "procurement", "receive_goods", {
    params: { id }, body: { lines: [{ line_id: line, quantity: 60 }] },
  });
  check(rest.body.data.status === "received", "receiving the last 60 leaves it received");

  const levels = await execute(page, "inventory", "list_levels", { params: { product_id: product.body.data.id } });
  check(levels.body.data[0].on_hand === 100, "stock on hand is 100");
  const movements = await execute(page, "inventory", "list_movements", { params: { product_id: product.body.data.id } });
  const moved = movements.body.data.filter((m) => m.reference === `purchase_order:${id}`).map((m) => m.quantity);
  check(moved.reduce((a, b) => a + b, 0) === 100 && moved.length === 2, "two receipt movements add up to 100");
  const ledger = await execute(page, "ledger", "list_entries", {
    params: { reference: `purchase_order:${id}` }, screenshot: "swagger-ledger.png",
  });
  const debits = ledger.body.data.map((e) => e.lines.find((l) => l.account === "inventory").debit);
  const balanced = ledger.body.data.every((e) => e.lines.reduce((s, l) => s + l.debit - l.credit, 0) === 0);
  check(debits.reduce((a, b) => a + b, 0) === 4500 && balanced, "the ledger holds balanced entries worth 4500");
  console.log("done: the order went from draft to received through Swagger UI");
} finally {
  await browser.close();
}
