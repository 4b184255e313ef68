import { execFileSync } from 'node:child_process';

import { describe, expect, it } from 'vitest';

import {
  chatCellSource,
  chatNotebook,
  chatNotebookName,
  curlSnippet,
  impetusRoot,
  openaiBaseUrl,
  pythonSnippet
} from '../src/snippets';

const BASE = openaiBaseUrl('http://127.0.0.1:8888/a%40b/');

/** Python's own parser judges the snippets (python3 is on every machine that builds impetus). */
function pythonParses(source: string): void {
  execFileSync('python3', ['-c', 'import ast, sys; ast.parse(sys.stdin.read())'], {
    input: source
  });
}

describe('snippets', () => {
  it('builds the OpenAI base URL under the server base', () => {
    expect(BASE).toBe('http://127.0.0.1:8888/a%40b/impetus/v1');
    expect(openaiBaseUrl('http://h:1')).toBe('http://h:1/impetus/v1');
  });

  it('writes valid Python with the key or the environment variable', () => {
    const withKey = pythonSnippet(BASE, 'smollm2-135m', 'imp-abc"\'');
    expect(withKey).toContain('api_key="imp-abc\\"\'"');
    expect(withKey).toContain(`base_url="${BASE}"`);
    expect(withKey).not.toContain('import os');
    pythonParses(withKey);
    const withEnv = pythonSnippet(BASE, 'smollm2-135m');
    expect(withEnv).toContain('api_key=os.environ["IMPETUS_API_KEY"]');
    pythonParses(withEnv);
  });

  it('writes a curl command the shell parses into the right arguments', () => {
    const cmd = curlSnippet(BASE, "it's-a-model", 'imp-k');
    // Replace curl by printf to see the words the shell would pass.
    const words = execFileSync('bash', ['-c', cmd.replace(/^curl /, "printf '%s\\n' ")])
      .toString()
      .split('\n');
    expect(words[0]).toBe(`${BASE}/chat/completions`);
    expect(words).toContain('Authorization: Bearer imp-k');
    const body = JSON.parse(words[words.indexOf('-d') + 1]);
    expect(body.model).toBe("it's-a-model");
    expect(curlSnippet(BASE, 'm')).toContain('"Authorization: Bearer $IMPETUS_API_KEY"');
  });

  it('writes a Responses snippet with the openai client', () => {
    for (const key of ['imp-k', null]) {
      const py = pythonSnippet(BASE, 'smollm2-135m', key, 'responses');
      expect(py).toContain(`OpenAI(base_url="${BASE}"`);
      expect(py).toContain('client.responses.create(');
      expect(py).toContain('input="Write a haiku about Jupyter."');
      pythonParses(py);
    }
    const words = execFileSync('bash', [
      '-c',
      curlSnippet(BASE, 'm', 'imp-k', 'responses').replace(/^curl /, "printf '%s\\n' ")
    ])
      .toString()
      .split('\n');
    expect(words[0]).toBe(`${BASE}/responses`);
    expect(words).toContain('Authorization: Bearer imp-k');
    expect(JSON.parse(words[words.indexOf('-d') + 1])).toEqual({
      model: 'm',
      input: 'Write a haiku about Jupyter.',
      max_output_tokens: 128
    });
  }, 60_000); // two Python parses and a shell: slow on a loaded two-core machine

  it('writes Anthropic and Ollama snippets against the impetus root', () => {
    const root = impetusRoot(BASE);
    expect(root).toBe('http://127.0.0.1:8888/a%40b/impetus');
    for (const key of ['imp-k', null]) {
      const anth = pythonSnippet(BASE, 'smollm2-135m', key, 'anthropic');
      expect(anth).toContain(`anthropic.Anthropic(base_url="${root}"`);
      pythonParses(anth);
      const oll = pythonSnippet(BASE, 'smollm2-135m', key, 'ollama');
      expect(oll).toContain(`Client(host="${root}"`);
      pythonParses(oll);
    }
    const shell = (cmd: string): string[] =>
      execFileSync('bash', ['-c', cmd.replace(/^curl /, "printf '%s\\n' ")])
        .toString()
        .split('\n');
    const a = shell(curlSnippet(BASE, 'm', 'imp-k', 'anthropic'));
    expect(a[0]).toBe(`${root}/v1/messages`);
    expect(a).toContain('x-api-key: imp-k');
    expect(JSON.parse(a[a.indexOf('-d') + 1]).max_tokens).toBe(128);
    const o = shell(curlSnippet(BASE, 'm', 'imp-k', 'ollama'));
    expect(o[0]).toBe(`${root}/api/chat`);
    expect(JSON.parse(o[o.indexOf('-d') + 1])).toMatchObject({ model: 'm', stream: false });
  }, 60_000); // four Python parses and two shells: slow on a loaded two-core machine

  it('writes a chat notebook that nbformat would accept', () => {
    const nb = chatNotebook('smollm2-135m') as {
      nbformat: number;
      cells: Array<{ cell_type: string; source: string[] }>;
    };
    expect(nb.nbformat).toBe(4);
    const code = nb.cells.find(c => c.cell_type === 'code');
    expect(code?.source.join('')).toBe(chatCellSource('smollm2-135m'));
    expect(chatCellSource('smollm2-135m')).toBe(
      'import impetus.widgets as iw\n\niw.Chat(model="smollm2-135m")'
    );
    pythonParses(code?.source.join('') ?? '');
  });

  it('names chat notebooks safely', () => {
    expect(chatNotebookName('mlx-community/Llama-3.2-1B')).toBe(
      'chat-mlx-community-llama-3.2-1b.ipynb'
    );
    expect(chatNotebookName('smollm2-135m', 2)).toBe('chat-smollm2-135m-2.ipynb');
    expect(chatNotebookName('///')).toBe('chat-model.ipynb');
  });
});
