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
      'no-restricted-imports': ['error', {
        paths: [
          { name: 'dns', message: 'All name resolution goes through src/dns/ (configured servers).' },
          { name: 'node:dns', message: 'All name resolution goes through src/dns/ (configured servers).' },
          { name: 'dns/promises', message: 'All name resolution goes through src/dns/.' },
          { name: 'node:dns/promises', message: 'All name resolution goes through src/dns/.' },
        ],
      }],
    },
  },
  // bin/ is plain JavaScript run by Node: its globals are Node's.
  { files: ['bin/**'], languageOptions: { globals: { URL: 'readonly', console: 'readonly', process: 'readonly' } } },
  { files: ['src/dns/**'], rules: { 'no-restricted-imports': 'off' } },
  { files: ['bin/**', 'src/cli/**', 'test/**', 'bench/**', 'proof/**', 'scripts/**'], rules: { 'no-console': 'off' } },
);
