import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/**', 'data/**', 'dist/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      'no-console': 'error',
      'no-control-regex': 'off', // mail parsing checks ASCII ranges on purpose
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-restricted-imports': [
        'error',
        {
          paths: [
            { name: 'dns', message: 'All name resolution goes through src/dns/ (configured servers).' },
            { name: 'node:dns', message: 'All name resolution goes through src/dns/ (configured servers).' },
            { name: 'dns/promises', message: 'All name resolution goes through src/dns/.' },
            { name: 'node:dns/promises', message: 'All name resolution goes through src/dns/.' },
          ],
        },
      ],
    },
  },
  // Type-aware rules that catch real bugs: a promise nobody awaits (its rejection is lost), a
  // promise where a callback's result is ignored, a condition the types say is always the same.
  {
    files: ['src/**/*.ts', 'test/**/*.ts', 'bench/**/*.ts', 'proof/**/*.ts', 'scripts/**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // node:test's test() and describe() return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            {
              from: 'package',
              package: 'node:test',
              name: ['test', 'describe', 'it', 'suite', 'before', 'after', 'beforeEach', 'afterEach'],
            },
          ],
        },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
    },
  },
  // In the product a condition the types call constant is a bug or a type that lies; tests guard
  // against setups that failed part way (`await gw?.stop()`), so the rule holds for src/ only.
  {
    files: ['src/**/*.ts'],
    rules: { '@typescript-eslint/no-unnecessary-condition': ['error', { allowConstantLoopConditions: true }] },
  },
  // Prettier wraps code at 120 columns but leaves comments and long strings alone; in the product
  // no line is wider than that either (split the string with `+`, wrap the comment).
  { files: ['src/**/*.ts', 'ui/src/**/*.tsx', 'ui/src/**/*.ts'], rules: { 'max-len': ['error', { code: 120 }] } },
  // bin/ is plain JavaScript run by Node: its globals are Node's.
  { files: ['bin/**'], languageOptions: { globals: { URL: 'readonly', console: 'readonly', process: 'readonly' } } },
  { files: ['src/dns/**'], rules: { 'no-restricted-imports': 'off' } },
  { files: ['bin/**', 'src/cli/**', 'test/**', 'bench/**', 'proof/**', 'scripts/**'], rules: { 'no-console': 'off' } },
);
