import { defineConfig } from "vite";

// Relative asset paths so dist/ works when served at `/` by the api or by nginx.
const apiTarget = process.env.NETLAPSE_API || "http://127.0.0.1:8000";
// changeOrigin false: the api sees the dev server's Host (localhost:5173), the same origin the page's requests
// come from, so its cross-site guard lets them through (docs/security.md).

export default defineConfig({
  base: "./",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false, chunkSizeWarningLimit: 1000 },
  server: {
    proxy: { "/api": { target: apiTarget, changeOrigin: false, ws: true } },
  },
  preview: {
    proxy: { "/api": { target: apiTarget, changeOrigin: false, ws: true } },
  },
  test: {
    environment: "node",
    include: ["test/**/*.test.js"],
  },
});
