import { defineConfig } from "vite";

// Relative asset paths so dist/ works when served at `/` by the api or by nginx.
const apiTarget = process.env.NETLAPSE_API || "http://127.0.0.1:8000";

export default defineConfig({
  base: "./",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false, chunkSizeWarningLimit: 1000 },
  server: {
    proxy: { "/api": { target: apiTarget, changeOrigin: true, ws: true } },
  },
  preview: {
    proxy: { "/api": { target: apiTarget, changeOrigin: true, ws: true } },
  },
  test: {
    environment: "node",
    include: ["test/**/*.test.js"],
  },
});
