// The checkout page's live part: polls the status document, updates the words, the amount and the QR
// code, counts down to expiry, copies to the clipboard, and tells an embedding page what happened.
(function () {
  "use strict";
  var root = document.getElementById("checkout");
  if (!root) return;
  var statusUrl = root.dataset.statusUrl;
  var qrUrl = root.dataset.qrUrl;
  var state = root.dataset.state;
  var countdown = document.getElementById("countdown");
  var secondsLeft = countdown && countdown.dataset.secondsLeft !== "" ? parseInt(countdown.dataset.secondsLeft, 10) : null;
  var deadline = secondsLeft === null ? null : Date.now() + secondsLeft * 1000;

  function text(id, value) {
    var el = document.getElementById(id);
    if (el && value !== null && value !== undefined) el.textContent = value;
  }

  var framed = window.parent !== window;
  // only the merchant's configured origins may frame the page (CSP); a message addressed to another
  // origin than the parent's is dropped by the browser, so each one is tried
  var origins = (root.dataset.frameOrigins || "").split(" ").filter(Boolean);

  function tellParent(event, extra) {
    if (!framed) return;
    var message = { source: "gateway-checkout", event: event, state: state };
    for (var k in extra || {}) message[k] = extra[k];
    origins.forEach(function (origin) { window.parent.postMessage(message, origin); });
  }

  function tick() {
    if (deadline === null) return;
    var left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
    var m = Math.floor(left / 60), s = left % 60;
    text("countdown-value", m + ":" + (s < 10 ? "0" : "") + s);
  }

  var firstPoll = true;

  function apply(st) {
    var changed = st.state !== state;
    state = st.state;
    root.dataset.state = state;
    text("status-title", st.title);
    text("status-detail", st.detail);
    deadline = st.seconds_left === null ? null : Date.now() + st.seconds_left * 1000;
    if (countdown) countdown.hidden = st.seconds_left === null;
    var pay = document.getElementById("pay");
    if (st.address && !pay) { window.location.reload(); return true; }  // the asset was chosen elsewhere
    var options = document.getElementById("options");
    if (options && state !== "created") options.hidden = true;
    if (pay) {
      pay.hidden = !st.show_payment;
      var amount = document.getElementById("amount");
      var wanted = state === "underpaid" ? st.remaining : st.amount_due;
      if (amount && wanted && amount.value !== wanted) {
        amount.value = wanted;
        var qr = document.getElementById("qr");
        if (qr) qr.src = qrUrl + (state === "underpaid" ? "?remaining=1&t=" : "?t=") + Date.now();
      }
      var walletLink = document.getElementById("wallet-link");
      if (walletLink && st.payment_uri) walletLink.href = st.payment_uri;
    }
    showLink("continue", st.redirect_url, null);
    showLink("cancel", st.cancel_url, state === "created" || state === "awaiting_payment" ? "cancelLabel" : "backLabel");
    if ((changed || firstPoll) && (state === "paid" || state === "overpaid")) {
      tellParent("paid", { redirect_url: st.redirect_url });
      // framed, the embedding page decides where to go; on its own, the page goes back to the shop
      if (st.redirect_url && !framed) setTimeout(function () { window.location.assign(st.redirect_url); }, 1500);
    }
    if ((changed || firstPoll) && state === "expired") tellParent("expired");
    firstPoll = false;
    return st.final;
  }

  function showLink(id, href, labelKey) {
    var a = document.getElementById(id);
    if (!a) return;
    a.hidden = !href;
    if (href) a.href = href;
    if (labelKey && a.dataset[labelKey]) a.textContent = a.dataset[labelKey];
  }

  function poll() {
    fetch(statusUrl, { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (r) {
        if (r.status === 429) {  // slow down as asked
          var wait = parseInt(r.headers.get("Retry-After") || "30", 10);
          setTimeout(poll, Math.max(wait, 5) * 1000);
          return undefined;
        }
        return r.ok ? r.json() : null;
      })
      .then(function (st) {
        if (st === undefined) return;
        if (!st) { setTimeout(poll, 4000); return; }
        if (apply(st)) return;  // paid: nothing more will change here
        // an expired or failed payment can still change (a payment sent at the last second): slowly
        setTimeout(poll, state === "expired" || state === "failed" ? 15000 : 2000);
      })
      .catch(function () { setTimeout(poll, 4000); });
  }

  document.addEventListener("click", function (e) {
    var button = e.target.closest("button.copy");
    if (!button) return;
    var input = document.getElementById(button.dataset.copy);
    input.select();
    if (!button.dataset.label) button.dataset.label = button.textContent;
    var done = function () {
      button.textContent = "\u2713 " + button.dataset.label;
      clearTimeout(button.resetTimer);
      button.resetTimer = setTimeout(function () { button.textContent = button.dataset.label; }, 1200);
    };
    if (navigator.clipboard) navigator.clipboard.writeText(input.value).then(done, function () { document.execCommand("copy"); done(); });
    else { document.execCommand("copy"); done(); }
  });

  tick();
  setInterval(tick, 1000);
  setTimeout(poll, 1000);
})();
