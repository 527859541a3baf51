// ESLint flat config: typescript-eslint's recommended rules for the TypeScript sources and tests,
// ESLint's recommended rules for the plain JavaScript scripts. Formatting is Prettier's job
// (`npm run lint` runs both).
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', '.tmp/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { ecmaVersion: 2024, sourceType: 'module', globals: globals.node },
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' },
      ],
      // src/ must not load pg at run time: it is a peer dependency, patched where the app loads it.
      'no-restricted-imports': [
        'error',
        { paths: [{ name: 'pg', message: 'src/ may only `import type` from pg.', allowTypeImports: true }] },
      ],
    },
  },
  {
    // CommonJS apps (the ORM matrix's) load their modules with require().
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs' },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    files: ['test/**', 'scripts/**', 'bench/**', 'demo/**'],
    rules: { 'no-restricted-imports': 'off', '@typescript-eslint/no-explicit-any': 'off' },
  },
);
