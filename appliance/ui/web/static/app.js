// Kiosk touchscreen app. It only talks to the same-origin JSON API; the
// kiosk owns every rule, so this file only shows state and collects taps.
"use strict";
(function () {
  const MG_PER_OZ_MICRO = 28349523125; // mg per oz × 1e6, kept whole

  const body = document.body;
  const params = new URLSearchParams(location.search);
  const idleParam = Number(params.get("idle"));
  const cfg = {
    idleMS: idleParam > 0 ? Math.round(idleParam * 1000) : Number(body.dataset.idleMs) || 60000,
    statusMS: Number(body.dataset.statusMs) || 2000,
    weightMS: Number(body.dataset.weightMs) || 300,
    progressMS: Number(body.dataset.progressMs) || 300,
  };

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  // Money is integer mills; cents are rounded half up with integer maths.
  function money(mills) {
    const neg = mills < 0;
    const cents = Math.floor((Math.abs(mills) + 5) / 10);
    const s = "$" + Math.floor(cents / 100) + "." + String(cents % 100).padStart(2, "0");
    return neg ? "-" + s : s;
  }
  function ounces(mg) {
    const tenths = Math.round((mg * 10 * 1000000) / MG_PER_OZ_MICRO);
    return Math.floor(tenths / 10) + "." + (tenths % 10) + " oz";
  }

  // api returns {ok, status, data}; a network failure looks like a 503 so
  // every caller handles one shape.
  async function api(method, path, payload, token) {
    const opts = { method, headers: {} };
    if (payload !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(payload);
    }
    if (token) opts.headers["Authorization"] = "Bearer " + token;
    let res;
    try {
      res = await fetch(path, opts);
    } catch (e) {
      return { ok: false, status: 0, data: { error: { code: "service_unavailable", message: "The kiosk is not answering." } } };
    }
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    return { ok: res.ok, status: res.status, data: data || {} };
  }

  // ---- screens ----
  const screens = ["weigh", "services", "paying", "receipt", "error", "oos", "pin", "staff"];
  let current = "weigh";
  function show(name) {
    current = name;
    for (const s of screens) $("screen-" + s).hidden = s !== name;
    body.dataset.screen = name;
    $("staff-open").hidden = name === "pin" || name === "staff" || name === "paying";
    if (name === "weigh") pollWeight();
  }

  // ---- idle timeout ----
  let lastTouch = Date.now();
  for (const ev of ["pointerdown", "keydown", "touchstart"]) {
    document.addEventListener(ev, () => { lastTouch = Date.now(); }, { capture: true, passive: true });
  }
  setInterval(() => {
    // The start screen is already home, and a sale in progress must not be
    // hidden while the customer pays.
    if (current === "weigh" || current === "paying" || current === "oos") return;
    if (Date.now() - lastTouch < cfg.idleMS) return;
    if (current === "pin" || current === "staff") staffLogout();
    startOver();
  }, 250);

  // ---- status ----
  const reasonText = {
    out_of_labels: "Out of stamp labels",
    paper_out: "The printer is out of paper",
    door_open: "The printer door is open",
    out_of_service: "Taken out of service by staff",
    ops_out_of_service: "Taken out of service by the operator",
    locked: "This kiosk is locked",
    hub_offline: "No connection to the postage service",
    printer_fault: "The printer needs attention",
    certificate_expired: "This kiosk's certificate expired: staff, ask for a new enrollment code",
    wrong_stock: "The labels in the printer are not the expected ones: staff, reload the label stock",
  };
  let status = { in_service: true, reasons: [] };
  async function pollStatus() {
    const r = await api("GET", "/api/v1/status");
    if (r.ok) {
      status = r.data;
      // Ops' settings for the screen (a ?idle= on the page wins, for tests).
      if (status.idle_timeout_s > 0 && !(idleParam > 0)) cfg.idleMS = status.idle_timeout_s * 1000;
      if (status.language) document.documentElement.lang = status.language;
      renderServiceToggle();
      // Staff keep their screens so they can put the kiosk back in service.
      // A customer with a receipt or an error in hand keeps it: a failed
      // label's remedy must stay reachable when paper runs out.
      if (!status.in_service && !["paying", "receipt", "error", "pin", "staff"].includes(current)) {
        const ul = $("oos-reasons");
        ul.replaceChildren();
        for (const code of status.reasons || []) ul.append(el("li", "", reasonText[code] || code));
        $("oos-message").textContent = status.message || "";
        if (current !== "oos") show("oos");
      } else if (status.in_service && current === "oos") {
        startOver();
      }
    }
    setTimeout(pollStatus, cfg.statusMS);
  }

  // ---- weigh ----
  let weight = { weight_mg: 0, stable: false, state: "offline" };
  let weighing = false;
  async function pollWeight() {
    if (weighing) return; // one loop only
    weighing = true;
    while (current === "weigh") {
      const r = await api("GET", "/api/v1/weight");
      if (current !== "weigh") break;
      weight = r.ok ? r.data : { weight_mg: 0, stable: false, state: "offline" };
      renderWeight();
      await new Promise((res) => setTimeout(res, cfg.weightMS));
    }
    weighing = false;
  }
  function renderWeight() {
    const st = $("weight-state");
    let text = "", cls = "";
    const mg = weight.weight_mg || 0;
    $("weight").textContent = weight.state === "offline" ? "–" : ounces(Math.max(mg, 0));
    switch (weight.state) {
      case "ok":
        if (!weight.stable) { text = "In motion – hold still"; cls = "warn"; }
        else if (mg <= 0) { text = "Put your letter on the scale"; }
        else { text = "Ready"; }
        break;
      case "motion": text = "In motion – hold still"; cls = "warn"; break;
      case "over_capacity": text = "Too heavy for this scale"; cls = "bad"; break;
      case "under_capacity": text = "Scale not ready – take everything off the scale"; cls = "bad"; break;
      default: text = "Scale not ready"; cls = "bad";
    }
    st.textContent = text;
    st.className = "weight-state " + cls;
    $("continue").disabled = !(weight.state === "ok" && weight.stable && mg > 0);
  }

  // ---- services and quantity ----
  const sale = { weightMG: 0, prices: [], rate: null, qty: 1 };
  $("continue").addEventListener("click", async () => {
    if ($("continue").disabled) return;
    sale.weightMG = weight.weight_mg;
    sale.rate = null;
    sale.qty = 1;
    const r = await api("GET", "/api/v1/prices?weight_mg=" + encodeURIComponent(sale.weightMG));
    if (!r.ok || !Array.isArray(r.data)) return showError(r.data.error, "weigh");
    sale.prices = r.data;
    renderServices();
    show("services");
  });
  function renderServices() {
    $("services-weight").textContent = "for " + ounces(sale.weightMG);
    const list = $("service-list");
    list.replaceChildren();
    for (const p of sale.prices) {
      const b = el("button", "service");
      b.type = "button";
      b.dataset.test = "service-" + p.rate_class;
      b.dataset.rateClass = p.rate_class;
      const left = el("span", "name", p.name);
      if (p.error) {
        b.disabled = true;
        b.classList.add("unavailable");
        left.append(el("br"), el("span", "why", errorInfo(p.error).short));
        b.append(left, el("span", "price", "—"));
      } else {
        b.append(left, el("span", "price", money(p.price_mills)));
        if (sale.rate && sale.rate.rate_class === p.rate_class) b.classList.add("selected");
        b.addEventListener("click", () => { sale.rate = p; renderServices(); });
      }
      list.append(b);
    }
    $("qty").textContent = String(sale.qty);
    $("qty-minus").disabled = sale.qty <= 1;
    $("qty-plus").disabled = sale.qty >= 10;
    $("total").textContent = sale.rate ? money(sale.rate.price_mills * sale.qty) : "–";
    $("pay").disabled = !sale.rate;
  }
  $("qty-minus").addEventListener("click", () => { if (sale.qty > 1) sale.qty--; renderServices(); });
  $("qty-plus").addEventListener("click", () => { if (sale.qty < 10) sale.qty++; renderServices(); });
  $("services-back").addEventListener("click", startOver);

  // ---- paying, receipt ----
  let receipt = null;
  $("pay").addEventListener("click", async () => {
    if (!sale.rate) return;
    showProgress({ step: "paying" });
    show("paying");
    // The kiosk says where the sale is; the screen follows until it ends.
    let selling = true;
    (async () => {
      while (selling) {
        await new Promise((res) => setTimeout(res, cfg.progressMS));
        const p = await api("GET", "/api/v1/sales/progress");
        if (selling && p.ok) showProgress(p.data);
      }
    })();
    const r = await api("POST", "/api/v1/sales", {
      rate_class: sale.rate.rate_class,
      weight_mg: sale.weightMG,
      quantity: sale.qty,
      payment: { method: "terminal" },
    });
    selling = false;
    lastTouch = Date.now(); // give the customer a full idle period to read
    if (r.ok && r.data.status === "ok") {
      receipt = r.data;
      renderReceipt();
      show("receipt");
      return;
    }
    showError(r.data.error, "services");
  });

  const progressText = {
    weighing: ["Weighing…", "Please leave your item on the scale."],
    paying: ["Pay on the card terminal", "Tap or insert your card on the terminal below the screen."],
    issuing: ["One moment", "Making your stamps…"],
  };
  function showProgress(p) {
    let [step, hint] = progressText[p.step] || [null, null];
    if (p.step === "printing") {
      step = "Printing stamp " + p.label + " of " + p.of;
      hint = "Please wait until every label is out.";
    }
    if (!step) return; // idle: the answer is on its way
    $("pay-step").textContent = step;
    $("pay-hint").textContent = hint;
  }

  function renderReceipt() {
    const list = $("receipt-labels");
    list.replaceChildren();
    for (const l of receipt.labels || []) {
      const row = el("div", "label-row");
      row.dataset.test = "label-" + l.label_serial;
      row.append(el("span", "serial", l.label_serial), el("span", "amount", money(l.amount_mills || 0)));
      const out = el("span", "outcome " + l.outcome, l.outcome === "printed" ? "printed" : "failed" + (l.reason ? " (" + l.reason + ")" : ""));
      out.dataset.test = "outcome-" + l.label_serial;
      row.append(out);
      if (l.remedy) {
        const rem = el("span", "remedy", l.remedy);
        rem.dataset.test = "remedy-" + l.label_serial;
        row.append(rem);
      } else if (l.outcome !== "printed") {
        const rp = el("button", "", "Reprint free");
        rp.type = "button";
        rp.dataset.test = "reprint-" + l.label_serial;
        rp.addEventListener("click", () => remedy("reprint", l));
        const rf = el("button", "", "Refund");
        rf.type = "button";
        rf.dataset.test = "refund-" + l.label_serial;
        rf.addEventListener("click", () => remedy("refund", l));
        row.append(rp, rf);
      }
      list.append(row);
    }
    $("receipt-total").textContent = money(receipt.total_mills || 0);
  }

  async function remedy(kind, label) {
    const note = $("remedy-result");
    note.className = "note";
    note.textContent = kind === "reprint" ? "Reprinting…" : "Refunding…";
    for (const b of $("receipt-labels").querySelectorAll("button")) b.disabled = true;
    const r = await api("POST", "/api/v1/sales/" + encodeURIComponent(receipt.request_id) + "/" + kind, { label: label.label_serial });
    if (r.ok && r.data.status === "ok") {
      if (kind === "refund") {
        label.remedy = "refunded " + money(r.data.amount_mills || 0);
        note.textContent = "Refunded " + money(r.data.amount_mills || 0) + " to your card.";
      } else {
        const got = (r.data.labels || []).map((l) => l.label_serial + " " + l.outcome);
        label.remedy = "reprinted as " + got.join(", ");
        const ok = (r.data.labels || []).every((l) => l.outcome === "printed");
        note.textContent = ok ? "Reprinted free: " + got.join(", ") : "The reprint failed too. Please ask staff or choose Refund.";
        if (!ok) label.remedy = ""; // leave the buttons so Refund is still possible
        // A failed reprint label still needs a remedy, so it joins the list.
        for (const l of r.data.labels || []) if (l.outcome !== "printed") receipt.labels.push(l);
      }
    } else {
      const info = errorInfo(r.data.error);
      note.className = "note error-text";
      note.textContent = info.title + ". " + info.text;
    }
    renderReceipt();
  }
  $("done").addEventListener("click", startOver);

  // ---- errors ----
  function errorInfo(err) {
    err = err || { code: "internal_error", message: "" };
    const msg = err.message || "";
    const outOfLabels = {
      title: "Out of labels",
      text: "This kiosk has run out of stamp labels. No money was taken. Please ask staff.",
      short: "out of labels",
    };
    switch (err.code) {
      case "payment_declined":
        return { title: "Card declined", text: "Your card was declined. No money was taken. You can try another card.", short: "declined" };
      case "payment_timeout":
        return { title: "Payment timed out", text: "The card terminal did not get a payment in time. No money was taken.", short: "timed out" };
      case "insufficient_funds":
        return { title: "Not enough funds", text: "There are not enough funds for this purchase. No money was taken.", short: "not enough funds" };
      case "overweight":
        return { title: "Too heavy", text: "Your letter is too heavy for this service. Choose another service.", short: "too heavy for this service" };
      case "out_of_labels":
        return outOfLabels;
      case "rate_table_stale":
        return { title: "Prices are being updated", text: "Please try again in a few minutes. No money was taken.", short: "prices updating" };
      case "invalid_request":
        // The kiosk prices on its scale; what the screen showed went stale.
        if (/^weight_mg/.test(msg)) {
          return { title: "Please weigh again", text: "The weight on the scale changed, and so may the price. No money was taken.", short: "weigh again", back: "weigh" };
        }
        return { title: "Something went wrong", text: msg || "Please try again.", short: msg || "unavailable" };
      case "service_unavailable":
        if (/scale/i.test(msg)) {
          return { title: "The scale is not steady", text: "Let your item rest on the scale, then try again. No money was taken.", short: "scale not steady", back: "weigh" };
        }
        if (/label/i.test(msg) || (status.reasons || []).includes("out_of_labels")) return outOfLabels;
        return { title: "Service unavailable", text: "Stamps cannot be sold right now. Please try again later.", short: "unavailable" };
      default:
        return { title: "Something went wrong", text: msg || "Please try again.", short: msg || "unavailable" };
    }
  }
  let errorBack = "weigh";
  function showError(err, back) {
    const info = errorInfo(err);
    $("error-title").textContent = info.title;
    $("error-message").textContent = info.text;
    $("error-code").textContent = err && err.code ? err.code : "";
    body.dataset.errorCode = err && err.code ? err.code : "";
    errorBack = info.back || back;
    show("error");
  }
  $("error-back").addEventListener("click", () => {
    if (errorBack === "services" && sale.prices.length) { renderServices(); show("services"); } else startOver();
  });
  $("error-restart").addEventListener("click", startOver);

  function startOver() {
    sale.rate = null;
    sale.qty = 1;
    sale.prices = [];
    receipt = null;
    $("remedy-result").textContent = "";
    show(status.in_service === false ? "oos" : "weigh");
  }

  // ---- staff ----
  let token = "";
  let pin = "";
  function renderPin() { $("pin-display").textContent = "•".repeat(pin.length); }
  $("staff-open").addEventListener("click", () => {
    pin = "";
    renderPin();
    $("pin-error").textContent = "";
    show("pin");
  });
  for (const b of document.querySelectorAll("[data-digit]")) {
    b.addEventListener("click", () => { if (pin.length < 12) pin += b.dataset.digit; renderPin(); });
  }
  $("pin-clear").addEventListener("click", () => { pin = ""; renderPin(); });
  $("pin-cancel").addEventListener("click", startOver);
  $("pin-ok").addEventListener("click", async () => {
    const r = await api("POST", "/api/v1/staff/login", { pin });
    pin = "";
    renderPin();
    if (!r.ok || !r.data.token) {
      $("pin-error").textContent = r.status === 401 ? "Wrong PIN" : errorInfo(r.data.error).title;
      return;
    }
    token = r.data.token;
    $("staff-message").textContent = "";
    show("staff");
    $("stock-input").focus();
    loadCounters();
  });

  // staffCall sends a staff request and drops back to the PIN pad when the
  // session has expired.
  async function staffCall(method, path, payload) {
    const r = await api(method, path, payload, token);
    if (r.status === 401) {
      token = "";
      $("pin-error").textContent = "Session expired. Enter the PIN again.";
      show("pin");
    }
    return r;
  }
  function staffSay(text, bad) {
    const m = $("staff-message");
    m.textContent = text;
    m.className = "note" + (bad ? " error-text" : "");
  }
  async function loadCounters() {
    const r = await staffCall("GET", "/api/v1/staff/counters");
    if (!r.ok) { if (r.status !== 401) staffSay(errorInfo(r.data.error).text, true); return; }
    const c = r.data;
    $("c-sales").textContent = String(c.sales);
    $("c-labels").textContent = String(c.labels_left);
    $("c-paper").textContent = c.paper;
    $("c-printer").textContent = c.printer;
    $("c-scale").textContent = c.scale;
    const ul = $("staff-errors");
    ul.replaceChildren();
    for (const e of (c.errors || []).slice(-5).reverse()) ul.append(el("li", "", e.at + " " + e.error));
  }
  $("stock-input").addEventListener("keydown", async (ev) => {
    if (ev.key !== "Enter") return;
    ev.preventDefault();
    const input = $("stock-input");
    const serial = input.value.trim().toUpperCase();
    input.value = "";
    if (!/^[0-9A-F]{4}-[0-9A-F]{4}$/.test(serial)) {
      staffSay("Not a sheet serial: " + (serial || "(empty)") + ". Expected like 1966-F8CF.", true);
      return;
    }
    const r = await staffCall("POST", "/api/v1/staff/stock", { sheets: [serial] });
    if (r.ok) staffSay("Loaded sheet " + serial + ". Labels left: " + r.data.labels_left + ".");
    else if (r.status !== 401) staffSay("Sheet " + serial + " not loaded: " + ((r.data.error && r.data.error.message) || r.status), true);
    loadCounters();
    input.focus();
  });
  async function staffAction(path, payload, okText) {
    const r = await staffCall("POST", path, payload);
    if (r.ok) staffSay(okText);
    else if (r.status !== 401) staffSay(((r.data.error && r.data.error.message) || "Failed: " + r.status), true);
    loadCounters();
    return r.ok;
  }
  $("zero").addEventListener("click", () => staffAction("/api/v1/staff/zero", undefined, "Scale zeroed."));
  $("calibrate").addEventListener("click", () => {
    const g = $("cal-grams").value.trim();
    if (!/^\d+(\.\d{1,3})?$/.test(g) || Number(g) <= 0) { staffSay("Enter the known weight in grams, e.g. 500.", true); return; }
    const [whole, frac = ""] = g.split(".");
    const mg = Number(whole) * 1000 + Number(frac.padEnd(3, "0"));
    staffAction("/api/v1/staff/calibrate", { known_mg: mg }, "Calibrated with " + g + " g.");
  });
  function renderServiceToggle() {
    $("service-toggle").textContent = status.in_service === false ? "Put back in service" : "Take out of service";
  }
  $("service-toggle").addEventListener("click", async () => {
    const want = status.in_service === false;
    if (await staffAction("/api/v1/staff/service", { in_service: want }, want ? "Back in service." : "Out of service.")) {
      status.in_service = want;
      renderServiceToggle();
    }
  });
  async function staffLogout() {
    if (token) await api("POST", "/api/v1/staff/logout", undefined, token);
    token = "";
  }
  $("staff-logout").addEventListener("click", async () => { await staffLogout(); startOver(); });

  show("weigh");
  pollStatus();
})();
