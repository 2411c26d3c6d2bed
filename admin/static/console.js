// Small behaviours of the console; no inline scripts (the CSP allows none).
(function () {
  "use strict";
  // Forms whose button says data-confirm ask first (disable, revoke, reset).
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var message = button && button.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });
  // "复制" buttons copy the text of the element their data-copy names.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.textContent.trim()).then(function () {
      button.textContent = "已复制";
    });
  });
})();
