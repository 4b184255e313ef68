/**
 * Text the sidebar copies or writes: the OpenAI base URL, client snippets, the chat notebook.
 * Pure functions, unit-tested.
 */

/** `{origin}{base_url}impetus/v1` from the server's absolute base URL (ends with "/"). */
export function openaiBaseUrl(serverBaseUrl: string): string {
  const base = serverBaseUrl.endsWith('/') ? serverBaseUrl : `${serverBaseUrl}/`;
  return `${base}impetus/v1`;
}

/** The placeholder used when no key was just created: read it from the environment. */
export const KEY_ENV = 'IMPETUS_API_KEY';

function pyString(value: string): string {
  return JSON.stringify(value); // a JSON string is a valid Python string literal for our inputs
}

/** A ready-to-run openai SDK snippet. With no key, it reads IMPETUS_API_KEY. */
export function pythonSnippet(baseUrl: string, model: string, apiKey?: string | null): string {
  const lines = ['from openai import OpenAI'];
  if (!apiKey) {
    lines.unshift('import os');
  }
  const key = apiKey ? pyString(apiKey) : `os.environ[${pyString(KEY_ENV)}]`;
  lines.push(
    '',
    `client = OpenAI(base_url=${pyString(baseUrl)}, api_key=${key})`,
    'stream = client.chat.completions.create(',
    `    model=${pyString(model)},`,
    '    messages=[{"role": "user", "content": "Write a haiku about Jupyter."}],',
    '    max_tokens=128,',
    '    stream=True,',
    ')',
    'for chunk in stream:',
    '    if chunk.choices:',
    '        print(chunk.choices[0].delta.content or "", end="", flush=True)',
    'print()'
  );
  return lines.join('\n') + '\n';
}

function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** A curl command for one chat completion. With no key, it uses $IMPETUS_API_KEY. */
export function curlSnippet(baseUrl: string, model: string, apiKey?: string | null): string {
  const body = JSON.stringify({
    model,
    messages: [{ role: 'user', content: 'Write a haiku about Jupyter.' }],
    max_tokens: 128
  });
  const auth = apiKey ? shellQuote(`Authorization: Bearer ${apiKey}`) : `"Authorization: Bearer $${KEY_ENV}"`;
  return [
    `curl ${shellQuote(`${baseUrl}/chat/completions`)} \\`,
    `  -H ${auth} \\`,
    `  -H 'Content-Type: application/json' \\`,
    `  -d ${shellQuote(body)}`
  ].join('\n') + '\n';
}

/** The Python a chat notebook starts with. */
export function chatCellSource(model: string): string {
  return `import impetus.widgets as iw\n\niw.Chat(model=${pyString(model)})`;
}

/** An nbformat 4 notebook holding the chat panel for `model`. */
export function chatNotebook(model: string): Record<string, unknown> {
  const lines = (text: string): string[] => text.split(/(?<=\n)/);
  return {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: {
      kernelspec: { name: 'python3', display_name: 'Python 3 (ipykernel)', language: 'python' },
      language_info: { name: 'python' }
    },
    cells: [
      {
        cell_type: 'markdown',
        id: 'impetus-chat-title',
        metadata: {},
        source: lines(`# Chat with \`${model}\`\n\nRun the cell below; the panel streams from the impetus engine.`)
      },
      {
        cell_type: 'code',
        id: 'impetus-chat-panel',
        metadata: {},
        execution_count: null,
        outputs: [],
        source: lines(chatCellSource(model))
      }
    ]
  };
}

/** A file name for a chat notebook: `chat-<model>.ipynb`, then `-1`, `-2`... when taken. */
export function chatNotebookName(model: string, attempt = 0): string {
  const slug =
    model
      .toLowerCase()
      .replace(/[^a-z0-9._-]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 60) || 'model';
  return attempt ? `chat-${slug}-${attempt}.ipynb` : `chat-${slug}.ipynb`;
}
