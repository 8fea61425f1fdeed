// Run the inventory and procurement flows through the GraphQL playground (GraphiQL) in a real
// headless Chromium, as an integrator would: the token goes in the Headers
// tab, each operation is typed into the editor and run with the Run button,
// and its answer is read from the response pane. Then a subscription runs in
// the playground and shows a product created over REST.
//
//   cargo run &                                # a Nexus on http://127.0.0.1:8080
//   cd e2e && npm ci && npm run playground     # CHROMIUM=/usr/bin/chromium by default
//
// Only the sign-up (and the REST call the subscription waits for) happen
// outside the browser.

import { chromium } from "playwright-core";

const BASE = process.env.NEXUS_URL ?? "http://127.0.0.1:8080";
const run = Date.now().toString(36);

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

const post = (path, body, token) =>
  fetch(`${BASE}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });

async function signUp() {
  const account = { email: `stock-${run}@example.com`, password: "correct horse 42" };
  const registered = await post("/api/v1/auth/register", {
    tenant_name: `Playground ${run}`, tenant_slug: `playground-${run}`, name: "Sam Stock", ...account,
  });
  check(registered.status === 201, `registered tenant playground-${run}`);
  const login = await post("/api/v1/auth/login", { tenant: `playground-${run}`, ...account });
  const session = await login.json();
  check(login.status === 200, "logged in");
  return session.data?.token ?? session.token;
}

/// Replace the text of the CodeMirror editor inside `container` by typing,
/// as a user pasting into it would.
async function typeInto(page, container, text) {
  const editor = page.locator(`${container} .CodeMirror`).first();
  await editor.click();
  await page.keyboard.press("Control+A");
  await page.keyboard.press("Delete");
  await page.keyboard.insertText(text);
  // GraphiQL parses the text a moment after it changes (debounced), and
  // picks the transport from that parse: a subscription goes over the
  // WebSocket only once it has been seen to be one.
  await page.waitForTimeout(500);
}

/// What the response pane shows.
const response = (page) =>
  page.evaluate(() => document.querySelector(".graphiql-response .CodeMirror")?.CodeMirror.getValue() ?? "");

/// Type `document` into the query editor, press Run, and return the answer
/// the response pane shows, parsed.
async function execute(page, document) {
  const before = await response(page);
  await typeInto(page, ".graphiql-query-editor", document);
  await page.locator(".graphiql-execute-button").click();
  await page.waitForFunction(
    (previous) => {
      const text = document.querySelector(".graphiql-response .CodeMirror")?.CodeMirror.getValue() ?? "";
      if (!text || text === previous) return false;
      try { JSON.parse(text); return true; } catch { return false; }
    },
    before,
    { timeout: 10_000 },
  );
  return JSON.parse(await response(page));
}

const token = await signUp();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const failed = [];
  page.on("requestfailed", (r) => failed.push(r.url()));
  page.on("response", (r) => r.status() >= 400 && failed.push(`${r.status()} ${r.url()}`));
  await page.goto(`${BASE}/graphql`);
  await page.locator(".graphiql-query-editor .CodeMirror").waitFor();
  check((await page.title()).includes("Nexus"), "the playground opens");

  // The Headers tab (open by default; clicked in case it was closed).
  await page.getByRole("button", { name: "Headers" }).click();
  await typeInto(page, ".graphiql-editor-tool .graphiql-editor:not(.hidden)", JSON.stringify({ Authorization: `Bearer ${token}` }));

  const me = await execute(page, "{ me { email roles } }");
  check(me.data?.me?.email === `stock-${run}@example.com`, "the Headers tab's token signs the requests in");

  const warehouse = await execute(page, 'mutation { createWarehouse(input: {code: "MAIN", name: "Main warehouse"}) { id code } }');
  check(warehouse.data?.createWarehouse?.code === "MAIN", "createWarehouse answers the warehouse");
  const warehouseId = warehouse.data.createWarehouse.id;
  const product = await execute(page, 'mutation { createProduct(input: {sku: "BOLT-M8", name: "Bolt M8", unitPrice: 90, currency: "EUR"}) { id sku version } }');
  check(product.data?.createProduct?.sku === "BOLT-M8", "createProduct answers the product");
  const productId = product.data.createProduct.id;

  const adjust = (quantity, reason) =>
    execute(page, `mutation { adjustStock(input: {productId: "${productId}", warehouseId: "${warehouseId}", quantity: ${quantity}, reason: "${reason}"}) { onHand available } }`);
  const counted = await adjust(25, "opening count");
  check(counted.data?.adjustStock?.onHand === 25, "adjustStock counts 25 in");
  const short = await adjust(-30, "breakage");
  check(short.errors?.[0]?.extensions?.code === "insufficient_stock", "taking out 30 of 25 is refused with insufficient_stock");
  const invalid = await adjust(0, " ");
  const fields = invalid.errors?.[0]?.extensions?.errors?.map((e) => e.field) ?? [];
  check(invalid.errors?.[0]?.extensions?.code === "validation_failed" && fields.join() === "quantity,reason",
    "a zero quantity without a reason is refused with validation_failed naming both fields");
  const broken = await adjust(-5, "breakage");
  check(broken.data?.adjustStock?.onHand === 20, "adjustStock takes 5 out");

  const levels = await execute(page, `{ stockLevels(productId: "${productId}") { items { warehouseId onHand reserved available } pageInfo { total } } }`);
  const level = levels.data?.stockLevels?.items?.[0];
  check(levels.data?.stockLevels?.pageInfo?.total === 1 && level?.warehouseId === warehouseId, "stockLevels lists the one level");
  check(level.onHand === 20 && level.available === 20 && level.reserved === 0, "20 on hand and available");

  // The procurement flow: a vendor, a purchase order submitted, approved
  // and received, the stock and the journal entry it books.
  const vendor = await execute(page, 'mutation { createVendor(input: {name: "Acme Supplies", currency: "EUR"}) { id name } }');
  check(vendor.data?.createVendor?.name === "Acme Supplies", "createVendor answers the vendor");
  const drafted = await execute(page, `mutation { createPurchaseOrder(vendorId: "${vendor.data.createVendor.id}", warehouseId: "${warehouseId}", lines: [{productId: "${productId}", quantity: 40, unitCost: 45}]) { id status total lines { id } } }`);
  const po = drafted.data?.createPurchaseOrder;
  check(po?.status === "draft" && po.total === 1800, "createPurchaseOrder drafts 40 at 45: 1800");
  for (const [action, status] of [["SUBMIT", "submitted"], ["APPROVE", "approved"]]) {
    const moved = await execute(page, `mutation { transitionPurchaseOrder(id: "${po.id}", action: ${action}) { status } }`);
    check(moved.data?.transitionPurchaseOrder?.status === status, `transitionPurchaseOrder ${action} makes it ${status}`);
  }
  const received = await execute(page, `mutation { receiveGoods(id: "${po.id}", lines: [{lineId: "${po.lines[0].id}", quantity: 40}]) { status lines { received } } }`);
  check(received.data?.receiveGoods?.status === "received", "receiveGoods receives every line");
  const booked = await execute(page, `{ stockLevels(productId: "${productId}") { items { onHand } } ledgerEntries { items { reference lines { account debit credit } } } }`);
  check(booked.data?.stockLevels?.items?.[0]?.onHand === 60, "the receipt brings the stock to 60");
  check(booked.data?.ledgerEntries?.items?.[0]?.reference === `purchase_order:${po.id}`, "the receipt is booked in the ledger");
  await page.screenshot({ path: "playground-stock.png" });

  // A subscription: the playground opens /graphql/ws with the Headers tab
  // as connection_init, and shows the event of a product created over REST.
  const subscription = 'subscription { events(types: ["product.*"]) { type data } }';
  const before = await response(page);
  await typeInto(page, ".graphiql-query-editor", subscription);
  await page.locator(".graphiql-execute-button").click();
  await page.waitForTimeout(1000); // the connection is up and subscribed
  const started = Date.now();
  const created = await post("/api/v1/products", { sku: "NUT-M8", name: "Nut M8", unit_price: 20, currency: "EUR" }, token);
  check(created.status === 201, "POST /api/v1/products answers 201");
  await page.waitForFunction(
    (previous) => {
      const text = document.querySelector(".graphiql-response .CodeMirror")?.CodeMirror.getValue() ?? "";
      return text !== previous && text.includes("NUT-M8");
    },
    before,
    { timeout: 5_000 },
  );
  const elapsed = Date.now() - started;
  const event = JSON.parse(await response(page));
  check(event.data?.events?.type === "product.created" && event.data.events.data.sku === "NUT-M8",
    "the subscription shows product.created for NUT-M8");
  check(elapsed < 1000, `it arrived within a second of the REST call (${elapsed} ms)`);
  await page.screenshot({ path: "playground-subscription.png" });
  await page.locator(".graphiql-execute-button").click(); // stop
  check(failed.length === 0, `no request of the page failed ${failed.join(", ")}`.trim());
  console.log("done: the inventory and procurement flows and a subscription ran in the GraphQL playground");
} finally {
  await browser.close();
}
