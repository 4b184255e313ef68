import { describe, expect, it } from 'vitest';

import { looksLikeRepoId, matchesQuery, modelRows, preferredChatModel } from '../src/models';
import type { IModelState, IPullProgress, IRegistryEntry } from '../src/types';

/** A loaded model as the engine reports it (only id and kind matter to these tests). */
function loaded(id: string, kind: IModelState['kind']): IModelState {
  return {
    id,
    kind,
    path: `/models/${id}`,
    dtype: 'float32',
    source_dtype: 'float32',
    memory_bytes: 1,
    context_length: 2048,
    loaded_at: 0,
    last_used: 0
  };
}

const entries: IRegistryEntry[] = [
  { id: 'zeta-remote', kind: 'chat', source: 'hub', downloaded: false },
  { id: 'minilm', kind: 'embedding', source: 'builtin', downloaded: true },
  {
    id: 'smollm2-135m',
    kind: 'chat',
    source: 'builtin',
    quantization: 'Q4_1',
    downloaded: true,
    loaded: true
  },
  { id: 'alpha-local', kind: 'chat', source: 'local', downloaded: true }
];

describe('modelRows', () => {
  it('orders loaded, downloaded, then remote, by id', () => {
    const rows = modelRows(entries, [loaded('minilm', 'embedding')], new Map());
    expect(rows.map(r => [r.entry.id, r.loaded, r.downloaded])).toEqual([
      ['minilm', true, true],
      ['alpha-local', false, true],
      ['smollm2-135m', false, true], // the status says it is no longer loaded
      ['zeta-remote', false, false]
    ]);
  });

  it("falls back on the registry's loaded flag before any status", () => {
    const rows = modelRows(entries, null, new Map());
    expect(rows[0].entry.id).toBe('smollm2-135m');
    expect(rows[0].loaded).toBe(true);
  });

  it('adds models loaded outside the registry listing', () => {
    const rows = modelRows([], [loaded('/tmp/my-model', 'chat')], new Map());
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ loaded: true, downloaded: true, entry: { source: 'path' } });
  });

  it('filters by every term, but keeps rows with a download in flight', () => {
    const pulls = new Map<string, IPullProgress>([
      ['zeta-remote', { id: 'zeta-remote', status: 'downloading' }]
    ]);
    expect(modelRows(entries, null, pulls, 'builtin CHAT').map(r => r.entry.id)).toEqual([
      'smollm2-135m',
      'zeta-remote'
    ]);
    expect(modelRows(entries, null, new Map(), 'q4_1').map(r => r.entry.id)).toEqual([
      'smollm2-135m'
    ]);
  });

  it('gives a download of an unlisted model its own row', () => {
    const pulls = new Map<string, IPullProgress>([
      ['org/new', { id: 'org/new', status: 'downloading', bytes_done: 3 }]
    ]);
    const row = modelRows(entries, null, pulls, 'nothing matches').find(
      r => r.entry.id === 'org/new'
    );
    expect(row).toMatchObject({ loaded: false, downloaded: false, pull: { bytes_done: 3 } });
  });

  it('marks a finished download as downloaded before the list is refetched', () => {
    const pulls = new Map<string, IPullProgress>([
      ['zeta-remote', { id: 'zeta-remote', status: 'done' }]
    ]);
    const row = modelRows(entries, null, pulls).find(r => r.entry.id === 'zeta-remote');
    expect(row?.downloaded).toBe(true);
  });
});

describe('helpers', () => {
  it('matches an empty query', () => {
    expect(matchesQuery(entries[0], '  ')).toBe(true);
  });

  it('prefers a loaded chat model for snippets', () => {
    expect(preferredChatModel(modelRows(entries, [loaded('minilm', 'embedding')], new Map()))).toBe(
      'alpha-local'
    );
    expect(preferredChatModel(modelRows(entries, null, new Map()))).toBe('smollm2-135m');
    expect(preferredChatModel([])).toBe('smollm2-135m');
  });

  it('recognises hub repository ids', () => {
    expect(looksLikeRepoId('mlx-community/Qwen2.5-0.5B-Instruct-4bit')).toBe(true);
    expect(looksLikeRepoId('smollm')).toBe(false);
    expect(looksLikeRepoId('a/b/c')).toBe(false);
  });
});
