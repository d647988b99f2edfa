import { defineConfig } from 'vite';

// The build lands in ../assets, which the Rust binary embeds (rust-embed, folder `assets/`).
// Hashed files go to ../assets/assets/, which the server caches as immutable. The build must
// be reproducible: CI rebuilds and fails if the committed ../assets differs.
export default defineConfig({
  base: '/',
  oxc: {
    jsx: { runtime: 'automatic', importSource: 'preact' },
  },
  build: {
    outDir: '../assets',
    emptyOutDir: true,
    assetsDir: 'assets',
    sourcemap: false,
    target: 'es2022',
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
  },
  server: {
    // `npm run dev` against a local `auxot serve` on the default port.
    proxy: {
      '/api': 'http://127.0.0.1:8080',
      '/v1': 'http://127.0.0.1:8080',
      '/healthz': 'http://127.0.0.1:8080',
    },
  },
});
