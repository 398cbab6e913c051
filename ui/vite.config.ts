// Build of the admin centre's web UI (Vite + Preact + uPlot): `npm run build` writes dist/ui/,
// which `portcullis serve` serves on admin.listen. Everything is bundled: no CDN, no network at run
// time, no inline script (the server's CSP forbids them).
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  logLevel: 'warn',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: fileURLToPath(new URL('../dist/ui', import.meta.url)),
    emptyOutDir: true,
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    sourcemap: false,
    target: 'es2022',
  },
});
