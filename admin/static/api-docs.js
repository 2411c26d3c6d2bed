// Renders /api/v1/openapi.json with the vendored Swagger UI (no CDN, no inline script).
// Read only: "try it out" is off — a console session must not fire API calls by accident.
(function () {
  "use strict";
  function start() {
    var el = document.getElementById("swagger-ui");
    if (!el || !window.SwaggerUIBundle) return;
    window.SwaggerUIBundle({
      url: el.getAttribute("data-spec-url"),
      dom_id: "#swagger-ui",
      deepLinking: true,
      presets: [window.SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
      supportedSubmitMethods: [],
      // Swagger UI would ask validator.swagger.io otherwise: nothing leaves the bank.
      validatorUrl: null,
      defaultModelsExpandDepth: 0,
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
