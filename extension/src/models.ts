/**
 * The model list as the sidebar shows it: the registry merged with what the engine reports as
 * loaded right now, filtered by the search box. Pure logic, unit-tested.
 */
import type { IModelState, IPullProgress, IRegistryEntry } from './types';

export interface IModelRow {
  entry: IRegistryEntry;
  /** Loaded per the latest engine status (fresher than the registry listing). */
  loaded: boolean;
  state: IModelState | null;
  downloaded: boolean;
  pull: IPullProgress | null;
}

/** Every whitespace-separated term must occur in the id, source, kind or quantization. */
export function matchesQuery(entry: IRegistryEntry, query: string): boolean {
  const terms = query.toLowerCase().split(/\s+/).filter(Boolean);
  if (terms.length === 0) {
    return true;
  }
  const haystack = [entry.id, entry.source, entry.kind, entry.quantization, entry.description]
    .filter(v => typeof v === 'string')
    .join(' ')
    .toLowerCase();
  return terms.every(term => haystack.includes(term));
}

/**
 * Rows for the list: loaded models first, then downloaded, then the rest, each by id.
 * `loadedStates` is `EngineStatus.models` (null when no status arrived yet: then the registry's
 * own `loaded` flag is used). Models loaded in the engine but absent from the registry listing
 * (loaded from a path, say) and downloads of models not listed yet still get a row.
 */
export function modelRows(
  entries: readonly IRegistryEntry[],
  loadedStates: readonly IModelState[] | null,
  pulls: ReadonlyMap<string, IPullProgress>,
  query = ''
): IModelRow[] {
  const states = new Map((loadedStates ?? []).map(s => [s.id, s]));
  const seen = new Set<string>();
  const rows: IModelRow[] = [];
  for (const entry of entries) {
    seen.add(entry.id);
    const state = states.get(entry.id) ?? null;
    rows.push({
      entry,
      state,
      loaded: loadedStates ? state !== null : Boolean(entry.loaded),
      downloaded:
        Boolean(entry.downloaded) || state !== null || pulls.get(entry.id)?.status === 'done',
      pull: pulls.get(entry.id) ?? null
    });
  }
  for (const state of states.values()) {
    if (!seen.has(state.id)) {
      rows.push({
        entry: { id: state.id, kind: state.kind, source: 'path', downloaded: true, loaded: true },
        state,
        loaded: true,
        downloaded: true,
        pull: pulls.get(state.id) ?? null
      });
    }
  }
  // A download started from the search box or the hub results: its row shows the progress (hub
  // repos go into the Hugging Face cache, the source the registry lists them with once done).
  for (const [id, pull] of pulls) {
    if (!seen.has(id) && !states.has(id)) {
      rows.push({
        entry: { id, source: 'hf-cache', downloaded: pull.status === 'done' },
        state: null,
        loaded: false,
        downloaded: pull.status === 'done',
        pull
      });
    }
  }
  const rank = (r: IModelRow): number => (r.loaded ? 0 : r.downloaded ? 1 : 2);
  return rows
    .filter(r => matchesQuery(r.entry, query) || r.pull !== null)
    .sort((a, b) => rank(a) - rank(b) || a.entry.id.localeCompare(b.entry.id));
}

/**
 * The model a snippet or a new chat should name: the first loaded chat model, else the first
 * downloaded chat model, else the embedded default.
 */
export function preferredChatModel(rows: readonly IModelRow[], fallback = 'smollm2-135m'): string {
  const isChat = (r: IModelRow): boolean => (r.state?.kind ?? r.entry.kind ?? 'chat') === 'chat';
  const loaded = rows.find(r => r.loaded && isChat(r));
  if (loaded) {
    return loaded.entry.id;
  }
  const local = rows.find(r => r.downloaded && isChat(r));
  return local ? local.entry.id : fallback;
}

/** Does the search text look like a hub repository id the user may want to download as is? */
export function looksLikeRepoId(query: string): boolean {
  return /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/.test(query.trim());
}
