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

  // ---- language: every string comes from the catalogues ----
  const catalogs = {};
  // The languages with a catalogue, from the page; the button steps through them.
  const languages = (body.dataset.languages || "en").split(" ");
  let lang = "en";        // the screen's language now
  let storeLang = "en";   // ops' default for this kiosk's store
  let chosenLang = "";    // the customer's choice, until the screen starts over
  function t(key, vars) {
    let s = (catalogs[lang] && catalogs[lang][key]) || (catalogs.en && catalogs.en[key]) || key;
    for (const k in vars || {}) s = s.split("{" + k + "}").join(String(vars[k]));
    return s;
  }
  async function loadCatalogs() {
    for (const l of languages) {
      try {
        const r = await fetch("/ui/i18n/" + l + ".json");
        if (r.ok) catalogs[l] = await r.json();
      } catch (e) { /* the page still works in the language it was written in */ }
    }
  }
  function nextLang(l) { return languages[(languages.indexOf(l) + 1) % languages.length]; }
  function setLang(l) {
    lang = catalogs[l] ? l : "en";
    document.documentElement.lang = lang;
    document.title = t("title");
    for (const e of document.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
    for (const e of document.querySelectorAll("[data-i18n-aria]")) e.setAttribute("aria-label", t(e.dataset.i18nAria));
    // The button offers the next language in its own words: from that
    // language's catalogue, once it is in (until then the page's own words
    // stand; English's would name English while English shows).
    const next = nextLang(lang);
    const nc = catalogs[next];
    if (nc) {
      $("lang").textContent = nc["lang.name"] || next;
      $("lang").setAttribute("aria-label", nc["lang.switch_label"] || next);
      $("lang").lang = next;
    }
    renderContrast();
    renderServiceToggle();
    rerender();
  }
  // rerender redraws what the current screen built from data.
  function rerender() {
    if (current === "weigh") renderWeight();
    if (current === "services") renderServices();
    if (current === "receipt" && receipt) renderReceipt();
    if (current === "oos") renderOOS();
    if (current === "shift" && shift) renderShift();
    if (current === "error" && lastError) showError(lastError.err, lastError.back);
  }

  // ---- high contrast and large text ----
  let contrast = false;
  function renderContrast() {
    body.classList.toggle("hc", contrast);
    $("contrast").setAttribute("aria-pressed", String(contrast));
    $("contrast").textContent = t(contrast ? "contrast.off" : "contrast.on");
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
      return { ok: false, status: 0, data: { error: { code: "service_unavailable", message: t("err.no_answer") } } };
    }
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    return { ok: res.ok, status: res.status, data: data || {} };
  }

  // ---- screens ----
  const screens = ["weigh", "services", "paying", "receipt", "error", "oos", "pin", "staff", "shift"];
  const staffScreens = ["pin", "staff", "shift"];
  let current = "weigh";
  function show(name) {
    const moved = current !== name;
    current = name;
    for (const s of screens) $("screen-" + s).hidden = s !== name;
    body.dataset.screen = name;
    $("staff-open").hidden = staffScreens.includes(name) || name === "paying";
    if (name === "weigh") pollWeight();
    // A keypad user starts each screen on its main action, or its title.
    if (moved) focusScreen(name);
  }
  function focusScreen(name) {
    const sec = $("screen-" + name);
    const main = sec.querySelector("button.primary:not([disabled])") || sec.querySelector("h1");
    if (main) main.focus({ preventScroll: true });
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
    if (staffScreens.includes(current)) staffLogout();
    startOver();
  }, 250);

  // ---- status ----

  let status = { in_service: true, reasons: [] };
  async function pollStatus() {
    // screen=1: the kiosk tells the touchscreen's watchdog this page lives.
    const r = await api("GET", "/api/v1/status?screen=1");
    if (r.ok) {
      status = r.data;
      // Ops' settings for the screen (a ?idle= on the page wins, for tests).
      if (status.idle_timeout_s > 0 && !(idleParam > 0)) cfg.idleMS = status.idle_timeout_s * 1000;
      if (status.language && status.language !== storeLang) {
        storeLang = status.language;
        if (!chosenLang && catalogs[storeLang]) setLang(storeLang);
      }
      renderServiceToggle();
      // Staff keep their screens so they can put the kiosk back in service.
      // A customer with a receipt or an error in hand keeps it: a failed
      // label's remedy must stay reachable when paper runs out.
      if (!status.in_service && !["paying", "receipt", "error", ...staffScreens].includes(current)) {
        renderOOS();
        if (current !== "oos") show("oos");
      } else if (status.in_service && current === "oos") {
        startOver();
      }
    }
    setTimeout(pollStatus, cfg.statusMS);
  }

  function renderOOS() {
    const ul = $("oos-reasons");
    ul.replaceChildren();
    for (const code of status.reasons || []) {
      const key = "reason." + code;
      ul.append(el("li", "", t(key) === key ? code : t(key)));
    }
    $("oos-message").textContent = status.message || "";
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
        if (!weight.stable) { text = t("weigh.motion"); cls = "warn"; }
        else if (mg <= 0) { text = t("weigh.put"); }
        else { text = t("weigh.ready"); }
        break;
      case "motion": text = t("weigh.motion"); cls = "warn"; break;
      case "over_capacity": text = t("weigh.over"); cls = "bad"; break;
      case "under_capacity": text = t("weigh.under"); cls = "bad"; break;
      default: text = t("weigh.not_ready"); cls = "bad";
    }
    st.textContent = text;
    st.className = "weight-state " + cls;
    const was = $("continue").disabled;
    $("continue").disabled = !(weight.state === "ok" && weight.stable && mg > 0);
    // The keypad's focus follows the action as it becomes possible.
    if (was && !$("continue").disabled && document.activeElement === $("weigh-title")) $("continue").focus();
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
    $("services-weight").textContent = t("services.for", { weight: ounces(sale.weightMG) });
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
        b.setAttribute("aria-pressed", String(!!(sale.rate && sale.rate.rate_class === p.rate_class)));
        b.addEventListener("click", () => {
          sale.rate = p;
          renderServices();
          // The list is drawn anew: keep the keypad's place on the choice.
          const again = list.querySelector('[data-test="service-' + p.rate_class + '"]');
          if (again) again.focus();
        });
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

  const progressKey = { weighing: "paying.weighing", paying: "paying.card", issuing: "paying.issuing" };
  function showProgress(p) {
    let step = null, hint = null;
    if (progressKey[p.step]) {
      step = t(progressKey[p.step]);
      hint = t(progressKey[p.step] + "_hint");
    }
    if (p.step === "printing") {
      step = t("paying.printing", { n: p.label, of: p.of });
      hint = t("paying.printing_hint");
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
      const out = el("span", "outcome " + l.outcome, l.outcome === "printed" ? t("receipt.printed") : t("receipt.failed") + (l.reason ? " (" + l.reason + ")" : ""));
      out.dataset.test = "outcome-" + l.label_serial;
      row.append(out);
      if (l.remedy) {
        const rem = el("span", "remedy", t(l.remedy.key, l.remedy.vars));
        rem.dataset.test = "remedy-" + l.label_serial;
        row.append(rem);
      } else if (l.outcome !== "printed") {
        const rp = el("button", "", t("receipt.reprint"));
        rp.type = "button";
        rp.dataset.test = "reprint-" + l.label_serial;
        rp.addEventListener("click", () => remedy("reprint", l));
        const rf = el("button", "", t("receipt.refund"));
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
    note.textContent = t(kind === "reprint" ? "receipt.reprinting" : "receipt.refunding");
    for (const b of $("receipt-labels").querySelectorAll("button")) b.disabled = true;
    const r = await api("POST", "/api/v1/sales/" + encodeURIComponent(receipt.request_id) + "/" + kind, { label: label.label_serial });
    if (r.ok && r.data.status === "ok") {
      if (kind === "refund") {
        label.remedy = { key: "receipt.refunded_short", vars: { amount: money(r.data.amount_mills || 0) } };
        note.textContent = t("receipt.refunded", { amount: money(r.data.amount_mills || 0) });
      } else {
        const got = (r.data.labels || []).map((l) => l.label_serial + " " + l.outcome);
        label.remedy = { key: "receipt.reprinted_short", vars: { labels: got.join(", ") } };
        const ok = (r.data.labels || []).every((l) => l.outcome === "printed");
        note.textContent = ok ? t("receipt.reprinted", { labels: got.join(", ") }) : t("receipt.reprint_failed");
        if (!ok) label.remedy = null; // leave the buttons so Refund is still possible
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
  $("print-receipt").addEventListener("click", async () => {
    if (!receipt) return;
    const note = $("remedy-result");
    note.className = "note";
    note.textContent = t("receipt.printing");
    $("print-receipt").disabled = true;
    const r = await api("POST", "/api/v1/sales/" + encodeURIComponent(receipt.request_id) + "/receipt", { language: lang });
    if (r.ok) {
      note.textContent = t("receipt.printed_note");
    } else {
      note.className = "note error-text";
      note.textContent = t("receipt.print_failed", { reason: errorInfo(r.data.error).title });
      $("print-receipt").disabled = false;
    }
  });

  // ---- errors ----
  function errorInfo(err) {
    err = err || { code: "internal_error", message: "" };
    const msg = err.message || "";
    const info = (k, back) => ({ title: t("err." + k + ".title"), text: t("err." + k + ".text"), short: t("err." + k + ".short"), back });
    switch (err.code) {
      case "payment_declined": return info("declined");
      case "payment_timeout": return info("timeout");
      case "insufficient_funds": return info("funds");
      case "overweight": return info("overweight");
      case "out_of_labels": return info("labels");
      case "rate_table_stale": return info("stale");
      case "invalid_request":
        // The kiosk prices on its scale; what the screen showed went stale.
        if (/^weight_mg/.test(msg)) return info("weigh", "weigh");
        break;
      case "service_unavailable":
        if (/scale/i.test(msg)) return info("scale", "weigh");
        if (/label/i.test(msg) || (status.reasons || []).includes("out_of_labels")) return info("labels");
        return info("unavailable");
    }
    // The hub's own words, in English, are better than nothing.
    const other = info("other");
    if (msg) { other.text = msg; other.short = msg; }
    return other;
  }
  let errorBack = "weigh";
  let lastError = null;
  function showError(err, back) {
    lastError = { err, back };
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
    lastError = null;
    $("remedy-result").textContent = "";
    $("print-receipt").disabled = false;
    // The next customer starts in the store's language and normal view.
    contrast = false;
    if (chosenLang) { chosenLang = ""; setLang(storeLang); } else renderContrast();
    show(status.in_service === false ? "oos" : "weigh");
  }

  // ---- staff ----
  let token = "";
  let pin = "";
  function renderPin() {
    $("pin-display").textContent = "•".repeat(pin.length);
    $("pin-display").setAttribute("aria-label", t("pin.entered", { n: pin.length }));
  }
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
      $("pin-error").textContent = r.status === 401 ? t("pin.wrong") : errorInfo(r.data.error).title;
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
      $("pin-error").textContent = t("pin.expired");
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
      staffSay(t("staff.not_serial", { serial: serial || t("staff.empty") }), true);
      return;
    }
    const r = await staffCall("POST", "/api/v1/staff/stock", { sheets: [serial] });
    if (r.ok) staffSay(t("staff.loaded", { serial, left: r.data.labels_left }));
    else if (r.status !== 401) staffSay(t("staff.not_loaded", { serial, why: (r.data.error && r.data.error.message) || r.status }), true);
    loadCounters();
    input.focus();
  });
  async function staffAction(path, payload, okText) {
    const r = await staffCall("POST", path, payload);
    if (r.ok) staffSay(okText);
    else if (r.status !== 401) staffSay(((r.data.error && r.data.error.message) || t("staff.failed", { status: r.status })), true);
    loadCounters();
    return r.ok;
  }
  $("zero").addEventListener("click", () => staffAction("/api/v1/staff/zero", undefined, t("staff.zeroed")));
  $("calibrate").addEventListener("click", () => {
    const g = $("cal-grams").value.trim();
    if (!/^\d+(\.\d{1,3})?$/.test(g) || Number(g) <= 0) { staffSay(t("staff.grams_hint"), true); return; }
    const [whole, frac = ""] = g.split(".");
    const mg = Number(whole) * 1000 + Number(frac.padEnd(3, "0"));
    staffAction("/api/v1/staff/calibrate", { known_mg: mg }, t("staff.calibrated", { grams: g }));
  });
  function renderServiceToggle() {
    $("service-toggle").textContent = t(status.in_service === false ? "staff.in" : "staff.out");
  }
  $("service-toggle").addEventListener("click", async () => {
    const want = status.in_service === false;
    if (await staffAction("/api/v1/staff/service", { in_service: want }, t(want ? "staff.back_in" : "staff.taken_out"))) {
      status.in_service = want;
      renderServiceToggle();
    }
  });
  async function staffLogout() {
    if (token) await api("POST", "/api/v1/staff/logout", undefined, token);
    token = "";
  }
  $("staff-logout").addEventListener("click", async () => { await staffLogout(); startOver(); });

  // ---- shift report ----
  let shift = null;
  const shiftRows = [
    ["shift.sales", (s) => s.sales], ["shift.stamps", (s) => s.stamps], ["shift.postage", (s) => money(s.postage_mills)],
    ["shift.card", (s) => money(s.card_mills)], ["shift.account", (s) => money(s.account_mills)],
    ["shift.refunds", (s) => s.refunds + " · " + money(s.refund_mills) +
      (s.refunds_refused ? " · " + t("shift.refused", { n: s.refunds_refused }) : "")],
    ["shift.voids", (s) => s.voids],
    ["shift.loaded", (s) => s.labels_loaded], ["shift.used", (s) => s.labels_used], ["shift.faults", (s) => s.faults],
  ];
  function renderShift() {
    $("shift-since").textContent = t("shift.since", { at: new Date(shift.from).toLocaleString(lang) });
    const dl = $("shift-figures");
    dl.replaceChildren();
    for (const [key, val] of shiftRows) {
      const dd = el("dd", "", String(val(shift)));
      dd.dataset.test = key.replace(".", "-");
      dl.append(el("dt", "", t(key)), dd);
    }
    for (const c of shift.classes || []) {
      const dd = el("dd", "", c.count + " · " + money(c.postage_mills));
      dd.dataset.test = "shift-class-" + c.rate_class;
      dl.append(el("dt", "", c.name || c.rate_class), dd);
    }
  }
  async function loadShift() {
    const r = await staffCall("GET", "/api/v1/staff/shift");
    if (!r.ok) return false;
    shift = r.data;
    renderShift();
    return true;
  }
  $("shift-open").addEventListener("click", async () => {
    $("shift-message").textContent = "";
    if (await loadShift()) show("shift");
  });
  async function shiftPrint(path, okKey) {
    const m = $("shift-message");
    const r = await staffCall("POST", path, { language: lang });
    m.className = "note" + (r.ok ? "" : " error-text");
    m.textContent = r.ok ? t(okKey) : errorInfo(r.data.error).title + ". " + ((r.data.error && r.data.error.message) || "");
    if (r.ok) await loadShift();
  }
  $("shift-print").addEventListener("click", () => shiftPrint("/api/v1/staff/shift/print", "shift.printed"));
  $("shift-end").addEventListener("click", () => shiftPrint("/api/v1/staff/shift/end", "shift.ended"));
  $("shift-back").addEventListener("click", () => { show("staff"); loadCounters(); });

  // ---- the corner: language, contrast ----
  $("lang").addEventListener("click", () => {
    // Before the catalogues are in, the choice waits for them.
    chosenLang = nextLang(chosenLang || lang);
    setLang(chosenLang);
  });
  $("contrast").addEventListener("click", () => { contrast = !contrast; renderContrast(); });
  // A tactile keypad's digits work on the PIN screen as they do on its pad.
  document.addEventListener("keydown", (ev) => {
    if (current !== "pin") return;
    if (/^[0-9]$/.test(ev.key)) { if (pin.length < 12) pin += ev.key; renderPin(); ev.preventDefault(); }
    else if (ev.key === "Backspace") { pin = pin.slice(0, -1); renderPin(); ev.preventDefault(); }
  });

  // ---- a kiosk, not a browser ----
  // No context menu (a long press or a right click would offer "Inspect",
  // "Save as", "Print"), no dragging a button or image away, no selecting
  // the screen's text; the staff's inputs still select, cut and paste. The
  // browser's own shortcuts (DevTools, open, save, print) are also off by
  // Chromium's managed policy (images/kiosk/etc/chromium/policies/managed).
  const editable = (n) => n instanceof Element && n.closest("input, textarea") !== null;
  document.addEventListener("contextmenu", (ev) => { ev.preventDefault(); }, { capture: true });
  document.addEventListener("dragstart", (ev) => { ev.preventDefault(); }, { capture: true });
  document.addEventListener("selectstart", (ev) => { if (!editable(ev.target)) ev.preventDefault(); }, { capture: true });
  document.addEventListener("keydown", (ev) => {
    if (!(ev.ctrlKey || ev.metaKey || ev.altKey)) return;
    // Select all, copy, cut, paste and undo in an input; nothing else.
    if (editable(ev.target) && (ev.ctrlKey || ev.metaKey) && !ev.altKey && /^[acvxz]$/i.test(ev.key)) return;
    ev.preventDefault();
  }, { capture: true });

  show("weigh");
  loadCatalogs().then(() => { setLang(chosenLang || storeLang); pollStatus(); });
})();
