// The snippet form: show the fields of the chosen kind only (no inline script: CSP).
(function () {
  "use strict";
  var select = document.querySelector("[data-kind-select]");
  if (!select) return;
  function sync() {
    var kind = select.value;
    document.querySelectorAll(".kind-fields[data-kind]").forEach(function (group) {
      var kinds = group.getAttribute("data-kind").split(" ");
      group.hidden = kinds.indexOf(kind) < 0;
    });
  }
  select.addEventListener("change", sync);
  sync();
})();
