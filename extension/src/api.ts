/**
 * The admin and OpenAI endpoints of impetus, as typed calls.
 *
 * The transport is injected: in JupyterLab it is `ServerConnection.makeRequest` under
 * `{base_url}impetus/` (token and XSRF handled there), in the unit tests a fake that answers
 * with real `Response` objects. Nothing here touches the DOM or JupyterLab.
 */
import { ApiError, errorFromResponse } from './errors';
import { readEvents } from './sse';
import type {
  IApiKeyInfo,
  ICreatedKey,
  IEngineStatus,
  ILoadOptions,
  IModelState,
  IPullProgress,
  IRegistryEntry,
  PullStatus
} from './types';

/** Send a request to `{base_url}impetus/{path}`. */
export type Fetcher = (path: string, init?: RequestInit) => Promise<Response>;

const TERMINAL: ReadonlySet<PullStatus> = new Set<PullStatus>(['done', 'error', 'cancelled']);

export function isTerminal(status: PullStatus): boolean {
  return TERMINAL.has(status);
}

/** `{"data": [...]}` (OpenAI-style lists) or a bare array. */
function listOf<T>(body: unknown, what: string): T[] {
  if (Array.isArray(body)) {
    return body as T[];
  }
  if (body && typeof body === 'object' && Array.isArray((body as { data?: unknown }).data)) {
    return (body as { data: T[] }).data;
  }
  throw new ApiError(`unexpected ${what} response`);
}

export class ImpetusApi {
  constructor(private readonly fetcher: Fetcher) {}

  async status(): Promise<IEngineStatus> {
    return this.json<IEngineStatus>('admin/status');
  }

  async models(): Promise<IRegistryEntry[]> {
    return (await this.modelList()).models;
  }

  /** The registry listing, and the ids the server is downloading (for any client) right now. */
  async modelList(): Promise<{ models: IRegistryEntry[]; pulling: string[] }> {
    const body = await this.json('admin/models');
    const pulling = (body as { pulling?: unknown })?.pulling;
    return {
      models: listOf<IRegistryEntry>(body, 'model list'),
      pulling: Array.isArray(pulling)
        ? pulling.filter((p): p is string => typeof p === 'string')
        : []
    };
  }

  /**
   * Search the model hub (`GET admin/models/search?q=`). The answer is a list, or the registry's
   * SearchResult `{"query", "models": [...], "error"}` whose `error` says why the hub could not
   * be searched (offline, say).
   */
  async searchHub(query: string): Promise<IRegistryEntry[]> {
    const q = encodeURIComponent(query.trim());
    const body = await this.json(`admin/models/search?q=${q}`);
    if (body && typeof body === 'object' && !Array.isArray(body) && 'models' in body) {
      const result = body as { models?: unknown; error?: unknown };
      const models = Array.isArray(result.models) ? (result.models as IRegistryEntry[]) : [];
      if (typeof result.error === 'string' && result.error && models.length === 0) {
        throw new ApiError(result.error);
      }
      return models;
    }
    return listOf<IRegistryEntry>(body, 'search');
  }

  /**
   * Download a model, reporting every progress event; resolves with the last one
   * (`done`, `error` or `cancelled`). A stream that ends without one of those is an error:
   * the server went away mid-download.
   */
  async pull(
    id: string,
    onProgress: (progress: IPullProgress) => void,
    options: { load?: boolean; signal?: AbortSignal } = {}
  ): Promise<IPullProgress> {
    const response = await this.fetcher('admin/models/pull', {
      method: 'POST',
      body: JSON.stringify({ id, load: options.load ?? false }),
      headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream' },
      signal: options.signal
    });
    if (!response.ok) {
      throw await errorFromResponse(response);
    }
    if (!response.body) {
      throw new ApiError('the download response has no body', { status: response.status });
    }
    let last: IPullProgress | null = null;
    for await (const event of readEvents(response.body, options.signal)) {
      if (event.data === '[DONE]') {
        break;
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(event.data);
      } catch {
        throw new ApiError(`bad progress event: ${event.data.slice(0, 200)}`);
      }
      const progress = normaliseProgress(parsed, id, event.event);
      if (!progress) {
        continue;
      }
      last = progress;
      onProgress(progress);
      if (isTerminal(progress.status)) {
        break;
      }
    }
    if (!last || !isTerminal(last.status)) {
      const ended: IPullProgress = {
        ...(last ?? { id }),
        status: 'error',
        message: options.signal?.aborted
          ? 'stopped following the download (the server may still be downloading)'
          : 'the download stream ended before the download finished'
      };
      onProgress(ended);
      return ended;
    }
    return last;
  }

  async cancelPull(id: string): Promise<void> {
    await this.json('admin/models/pull/cancel', { method: 'POST', body: { id } });
  }

  async load(id: string, options: ILoadOptions = {}): Promise<IModelState> {
    const body: Record<string, unknown> = { id };
    if (options.keepAlive !== undefined) {
      body.keep_alive = options.keepAlive;
    }
    if (options.dtype) {
      body.dtype = options.dtype;
    }
    return this.json<IModelState>('admin/models/load', { method: 'POST', body });
  }

  /** Start the engine (it starts on first use otherwise); answers at once, follow `status`. */
  async startEngine(): Promise<{ state: string }> {
    return this.json<{ state: string }>('admin/engine/start', { method: 'POST', body: {} });
  }

  async unload(id: string): Promise<void> {
    await this.json('admin/models/unload', { method: 'POST', body: { id } });
  }

  async deleteModel(id: string): Promise<void> {
    // Slashes of hub ids (`org/name`) stay slashes: some proxies refuse an encoded "/".
    const path = id.split('/').map(encodeURIComponent).join('/');
    await this.json(`admin/models/${path}`, { method: 'DELETE' });
  }

  async keys(): Promise<IApiKeyInfo[]> {
    return listOf<IApiKeyInfo>(await this.json('admin/keys'), 'key list');
  }

  /** Create an inference-only key; the secret is in the answer and nowhere else, ever. */
  async createKey(name?: string): Promise<ICreatedKey> {
    const created = await this.json<ICreatedKey>('admin/keys', {
      method: 'POST',
      body: name ? { name } : {}
    });
    if (!created || typeof created.key !== 'string' || typeof created.id !== 'string') {
      throw new ApiError('the server did not return a key');
    }
    return created;
  }

  async revokeKey(keyId: string): Promise<void> {
    await this.json(`admin/keys/${encodeURIComponent(keyId)}`, { method: 'DELETE' });
  }

  private async json<T = unknown>(
    path: string,
    options: { method?: string; body?: unknown } = {}
  ): Promise<T> {
    const init: RequestInit = { method: options.method ?? 'GET' };
    if (options.body !== undefined) {
      init.body = JSON.stringify(options.body);
      init.headers = { 'Content-Type': 'application/json' };
    }
    const response = await this.fetcher(path, init);
    if (!response.ok) {
      throw await errorFromResponse(response);
    }
    const text = await response.text();
    if (!text) {
      return undefined as T;
    }
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ApiError(`${path}: the answer is not JSON`, { status: response.status });
    }
  }
}

const STATUSES: ReadonlySet<string> = new Set([
  'downloading',
  'converting',
  'done',
  'error',
  'cancelled'
]);

/**
 * Check one progress event. An SSE `event: error` with an OpenAI error body (the shape every
 * impetus error has) becomes an `error` progress, so a failure mid-stream is shown, not dropped.
 */
export function normaliseProgress(
  parsed: unknown,
  id: string,
  eventName = 'message'
): IPullProgress | null {
  if (!parsed || typeof parsed !== 'object') {
    return null;
  }
  const obj = parsed as Record<string, unknown>;
  if (obj.error && typeof obj.error === 'object') {
    const err = obj.error as Record<string, unknown>;
    return { id, status: 'error', message: String(err.message ?? 'download failed') };
  }
  const status = obj.status;
  if (typeof status !== 'string' || !STATUSES.has(status)) {
    return eventName === 'error'
      ? { id, status: 'error', message: String(obj.message ?? 'download failed') }
      : null;
  }
  return { id, ...obj } as IPullProgress;
}
