// Starts Swagger UI on /docs (service/docs.py) with this API's schema; a file, not an inline script,
// so that the page runs under the same Content-Security-Policy as the dashboard.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
