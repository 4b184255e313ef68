// ESLint for the sidebar's hand-written TypeScript, after the JupyterLab extension template:
// the recommended JavaScript and typescript-eslint rules plus its conventions (I-prefixed
// interfaces, braces on every block, strict equality). Formatting is prettier's alone:
// eslint-config-prettier turns off every rule that would disagree with it.
import js from '@eslint/js';
import prettier from 'eslint-config-prettier/flat';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig([
  {
    // generated: the API types (make types), the tsc output and the spec files of make check-types
    ignores: ['node_modules/**', 'lib/**', 'src/openapi.ts', 'openapi.check.ts']
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  prettier,
  {
    // after prettier's: it turns `curly` off, and `all` cannot disagree with its formatting
    files: ['**/*.ts', '**/*.tsx'],
    rules: {
      '@typescript-eslint/naming-convention': [
        'error',
        {
          selector: 'interface',
          format: ['PascalCase'],
          custom: { regex: '^I[A-Z]', match: true }
        }
      ],
      // `namespace CommandIDs` is JupyterLab's idiom for a plugin's command ids (the template's
      // setting too)
      '@typescript-eslint/no-namespace': 'off',
      // unused locals and imports fail; unused parameters keep a callback's documented signature
      '@typescript-eslint/no-unused-vars': ['error', { args: 'none' }],
      curly: ['error', 'all'],
      eqeqeq: 'error',
      'prefer-arrow-callback': 'error'
    }
  }
]);
