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

  function apply(st) {
    var changed = st.state !== state;
    state = st.state;
    root.dataset.state = state;
    text("status-title", st.title);
    text("status-detail", st.detail);
    if (st.seconds_left === null) {
      deadline = null;
      if (countdown) countdown.hidden = true;
    } else {
      deadline = Date.now() + st.seconds_left * 1000;
    }
    var amount = document.getElementById("amount");
    if (amount && st.state === "underpaid" && st.remaining) amount.value = st.remaining;
    var qr = document.getElementById("qr");
    if (qr && changed && st.state === "underpaid") qr.src = qrUrl + "?remaining=1&t=" + Date.now();
    var link = document.getElementById("wallet-link");
    if (link && st.payment_uri) link.href = st.payment_uri;
    var pay = document.getElementById("pay");
    if (pay && st.final) pay.hidden = true;
    if (changed && (state === "paid" || state === "overpaid")) {
      tellParent("paid", { redirect_url: st.redirect_url });
      // framed, the embedding page decides where to go; on its own, the page goes back to the shop
      if (st.redirect_url && !framed) setTimeout(function () { window.location.assign(st.redirect_url); }, 1500);
    }
    if (changed && state === "expired") tellParent("expired");
    if (changed && st.state === "awaiting_payment" && !document.getElementById("pay")) window.location.reload();
    return st.final;
  }

  function poll() {
    fetch(statusUrl, { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (st) { if (!st || !apply(st)) setTimeout(poll, 2000); })
      .catch(function () { setTimeout(poll, 4000); });
  }

  document.addEventListener("click", function (e) {
    var button = e.target.closest("button.copy");
    if (!button) return;
    var input = document.getElementById(button.dataset.copy);
    input.select();
    var done = function () { var label = button.textContent; button.textContent = "\u2713"; setTimeout(function () { button.textContent = label; }, 1200); };
    if (navigator.clipboard) navigator.clipboard.writeText(input.value).then(done, function () { document.execCommand("copy"); done(); });
    else { document.execCommand("copy"); done(); }
  });
  window.addEventListener("beforeunload", function () { if (state !== "paid" && state !== "overpaid") tellParent("closed"); });

  tick();
  setInterval(tick, 1000);
  setTimeout(poll, 1000);
})();
