// Embed the gateway's checkout in a shop page as a modal:
//
//   <script src="https://pay.example.com/static/checkout/embed.js"></script>
//   GatewayCheckout.open(checkoutUrl, {
//     onPaid: function (m) { ... },      // default: go to the intent's success_url
//     onExpired: function (m) { ... },
//     onClose: function () { ... },
//   });
//
// The shop's origin must be in the merchant's checkout origins (admin: Merchant -> checkout origins), or
// the browser refuses to show the checkout in the frame (CSP frame-ancestors).
(function () {
  "use strict";
  function open(url, handlers) {
    handlers = handlers || {};
    var origin = new URL(url, window.location.href).origin;
    var overlay = document.createElement("div");
    overlay.setAttribute("role", "dialog");
    overlay.setAttribute("aria-modal", "true");
    overlay.setAttribute("aria-label", "Payment");
    overlay.style.cssText = "position:fixed;inset:0;background:rgba(0,0,0,.55);z-index:2147483000;display:flex;align-items:center;justify-content:center";
    var frame = document.createElement("iframe");
    frame.src = url;
    frame.title = "Payment";
    frame.style.cssText = "width:min(36rem,100vw);height:min(46rem,100vh);border:0;border-radius:8px;background:#fff";
    var close = document.createElement("button");
    close.type = "button";
    close.textContent = "\u00d7";
    close.setAttribute("aria-label", "Close");
    close.style.cssText = "position:absolute;top:.5rem;right:.75rem;font-size:2rem;line-height:1;background:none;border:0;color:#fff;cursor:pointer";
    overlay.appendChild(frame);
    overlay.appendChild(close);
    document.body.appendChild(overlay);
    close.focus();

    function done() {
      window.removeEventListener("message", listen);
      document.removeEventListener("keydown", escape);
      if (overlay.parentNode) overlay.parentNode.removeChild(overlay);
    }
    function listen(e) {
      if (e.origin !== origin || e.source !== frame.contentWindow || !e.data || e.data.source !== "gateway-checkout") return;
      if (e.data.event === "paid") {
        if (handlers.onPaid) handlers.onPaid(e.data);
        else if (/^https?:\/\//.test(e.data.redirect_url || "")) window.location.assign(e.data.redirect_url);
      } else if (e.data.event === "expired" && handlers.onExpired) {
        handlers.onExpired(e.data);
      }
    }
    function escape(e) { if (e.key === "Escape") { done(); if (handlers.onClose) handlers.onClose(); } }
    close.addEventListener("click", function () { done(); if (handlers.onClose) handlers.onClose(); });
    window.addEventListener("message", listen);
    document.addEventListener("keydown", escape);
    return { close: done };
  }
  window.GatewayCheckout = { open: open };
})();
