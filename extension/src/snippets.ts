/**
 * Text the sidebar copies or writes: the OpenAI base URL, client snippets, the chat notebook.
 * Pure functions, unit-tested.
 */

/** `{origin}{base_url}impetus/v1` from the server's absolute base URL (ends with "/"). */
export function openaiBaseUrl(serverBaseUrl: string): string {
  const base = serverBaseUrl.endsWith('/') ? serverBaseUrl : `${serverBaseUrl}/`;
  return `${base}impetus/v1`;
}

/** The protocols impetus serves from the same engine, and the client each snippet uses. */
export type Protocol = 'openai' | 'responses' | 'anthropic' | 'ollama';
export const PROTOCOLS: { id: Protocol; label: string }[] = [
  { id: 'openai', label: 'OpenAI' },
  { id: 'responses', label: 'OpenAI Responses' },
  { id: 'anthropic', label: 'Anthropic' },
  { id: 'ollama', label: 'Ollama' }
];

/** `…/impetus` from the OpenAI base URL `…/impetus/v1`: Anthropic's SDK and Ollama's client
 * add their own paths (`/v1/messages`, `/api/chat`) to it. */
export function impetusRoot(openaiBase: string): string {
  return openaiBase.replace(/\/v1\/?$/, '');
}

/** The placeholder used when no key was just created: read it from the environment. */
export const KEY_ENV = 'IMPETUS_API_KEY';

function pyString(value: string): string {
  return JSON.stringify(value); // a JSON string is a valid Python string literal for our inputs
}

const PROMPT = 'Write a haiku about Jupyter.';

/** A ready-to-run snippet with the protocol's official client (openai for chat completions and
 * Responses, anthropic or ollama).
 * With no key, it reads IMPETUS_API_KEY. */
export function pythonSnippet(
  baseUrl: string,
  model: string,
  apiKey?: string | null,
  protocol: Protocol = 'openai'
): string {
  const key = apiKey ? pyString(apiKey) : `os.environ[${pyString(KEY_ENV)}]`;
  const head = apiKey ? [] : ['import os'];
  const root = pyString(impetusRoot(baseUrl));
  const messages = `    messages=[{"role": "user", "content": ${pyString(PROMPT)}}],`;
  if (protocol === 'anthropic') {
    return (
      [
        ...head,
        'import anthropic',
        '',
        `client = anthropic.Anthropic(base_url=${root}, api_key=${key})`,
        'with client.messages.stream(',
        `    model=${pyString(model)},`,
        '    max_tokens=128,',
        messages,
        ') as stream:',
        '    for text in stream.text_stream:',
        '        print(text, end="", flush=True)',
        'print()'
      ].join('\n') + '\n'
    );
  }
  if (protocol === 'ollama') {
    return (
      [
        ...head,
        'from ollama import Client',
        '',
        `client = Client(host=${root}, headers={"Authorization": "Bearer " + ${key}})`,
        'for part in client.chat(',
        `    model=${pyString(model)},`,
        messages,
        '    options={"num_predict": 128},',
        '    stream=True,',
        '):',
        '    print(part.message.content, end="", flush=True)',
        'print()'
      ].join('\n') + '\n'
    );
  }
  const lines = [...head, 'from openai import OpenAI'];
  if (protocol === 'responses') {
    return (
      [
        ...lines,
        '',
        `client = OpenAI(base_url=${pyString(baseUrl)}, api_key=${key})`,
        'stream = client.responses.create(',
        `    model=${pyString(model)},`,
        `    input=${pyString(PROMPT)},`,
        '    max_output_tokens=128,',
        '    stream=True,',
        ')',
        'for event in stream:',
        '    if event.type == "response.output_text.delta":',
        '        print(event.delta, end="", flush=True)',
        'print()'
      ].join('\n') + '\n'
    );
  }
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

/** A curl command for one answer in the protocol's shape. With no key, it uses $IMPETUS_API_KEY. */
export function curlSnippet(
  baseUrl: string,
  model: string,
  apiKey?: string | null,
  protocol: Protocol = 'openai'
): string {
  const messages = [{ role: 'user', content: PROMPT }];
  let url = `${baseUrl}/chat/completions`;
  let body = JSON.stringify({ model, messages, max_tokens: 128 });
  let auth = apiKey
    ? shellQuote(`Authorization: Bearer ${apiKey}`)
    : `"Authorization: Bearer $${KEY_ENV}"`;
  const extra: string[] = [];
  if (protocol === 'anthropic') {
    url = `${impetusRoot(baseUrl)}/v1/messages`;
    auth = apiKey ? shellQuote(`x-api-key: ${apiKey}`) : `"x-api-key: $${KEY_ENV}"`;
    extra.push(`  -H 'anthropic-version: 2023-06-01' \\`);
  } else if (protocol === 'responses') {
    url = `${baseUrl}/responses`;
    body = JSON.stringify({ model, input: PROMPT, max_output_tokens: 128 });
  } else if (protocol === 'ollama') {
    url = `${impetusRoot(baseUrl)}/api/chat`;
    body = JSON.stringify({ model, messages, options: { num_predict: 128 }, stream: false });
  }
  return (
    [
      `curl ${shellQuote(url)} \\`,
      `  -H ${auth} \\`,
      ...extra,
      `  -H 'Content-Type: application/json' \\`,
      `  -d ${shellQuote(body)}`
    ].join('\n') + '\n'
  );
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
        source: lines(
          `# Chat with \`${model}\`\n\nRun the cell below; the panel streams from the impetus engine.`
        )
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
