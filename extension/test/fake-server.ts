/**
 * An in-memory stand-in for the impetus admin API, answering a `Fetcher` with real `Response`
 * objects (and real streamed bodies for the SSE download), so that ImpetusApi and SidebarModel
 * run their true code paths in the unit tests.
 */
import type { Fetcher } from '../src/api';
import type { IApiKeyInfo, IEngineStatus, IPullProgress, IRegistryEntry } from '../src/types';

export interface IRecordedRequest {
  method: string;
  path: string;
  body: unknown;
  headers: Record<string, string>;
}

export function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' }
  });
}

export function openaiError(
  status: number,
  message: string,
  code: string,
  param: string | null = null
): Response {
  return json({ error: { message, type: 'invalid_request_error', param, code } }, status);
}

/** A body the test pushes SSE events into, one `send` at a time. */
export class PushStream {
  private controller!: ReadableStreamDefaultController<Uint8Array>;
  private readonly encoder = new TextEncoder();
  readonly stream: ReadableStream<Uint8Array>;
  cancelled = false;

  constructor() {
    this.stream = new ReadableStream<Uint8Array>({
      start: c => {
        this.controller = c;
      },
      cancel: () => {
        this.cancelled = true;
      }
    });
  }

  raw(text: string): void {
    this.controller.enqueue(this.encoder.encode(text));
  }

  send(event: IPullProgress | Record<string, unknown>): void {
    this.raw(`data: ${JSON.stringify(event)}\n\n`);
  }

  close(): void {
    this.controller.close();
  }
}

export class FakeServer {
  requests: IRecordedRequest[] = [];
  status: IEngineStatus = {
    state: 'ready',
    backend: 'cpu',
    device: 'cpu',
    memory_budget: 8 * 1024 ** 3,
    memory_used: 300 * 1024 ** 2,
    models: [
      {
        id: 'smollm2-135m',
        kind: 'chat',
        path: '/models/smollm2-135m',
        dtype: 'float32',
        source_dtype: 'float32',
        memory_bytes: 540 * 1024 ** 2,
        context_length: 8192,
        loaded_at: 1_700_000_000,
        last_used: 1_700_000_000,
        keep_alive: null,
        pinned: true
      }
    ],
    stats: { running: 0, waiting: 0, decode_tps_recent: 0 },
    endpoint: 'http://localhost:8888/impetus/v1'
  };
  models: IRegistryEntry[] = [
    {
      id: 'smollm2-135m',
      source: 'builtin',
      kind: 'chat',
      size_bytes: 100_000_000,
      quantization: 'Q4_1',
      loaded: true,
      downloaded: true
    },
    {
      id: 'minilm',
      source: 'builtin',
      kind: 'embedding',
      size_bytes: 90_000_000,
      quantization: null,
      loaded: false,
      downloaded: true
    },
    {
      id: 'org/remote-model',
      source: 'hub',
      kind: 'chat',
      size_bytes: 1_000_000,
      loaded: false,
      downloaded: false
    }
  ];
  keys: IApiKeyInfo[] = [];
  /** The open download streams, by model id. */
  pulls = new Map<string, PushStream>();
  /** Ids the server reports as downloading in `admin/models`. */
  pulling: string[] = [];
  /** Override one route: return a Response to answer with it, or undefined to fall through. */
  override: ((req: IRecordedRequest) => Response | undefined) | null = null;
  private keySeq = 0;

  get fetch(): Fetcher {
    return async (path, init = {}) => this.handle(path, init);
  }

  private async handle(path: string, init: RequestInit): Promise<Response> {
    const method = (init.method ?? 'GET').toUpperCase();
    const body = typeof init.body === 'string' && init.body ? JSON.parse(init.body) : undefined;
    const headers = Object.fromEntries(new Headers(init.headers).entries());
    const req: IRecordedRequest = { method, path, body, headers };
    this.requests.push(req);
    const over = this.override?.(req);
    if (over) {
      return over;
    }
    const b = (body ?? {}) as Record<string, unknown>;
    const route = `${method} ${path.split('?')[0]}`;
    switch (route) {
      case 'GET admin/status':
        return json(this.status);
      case 'POST admin/engine/start': {
        const was = this.status.state;
        if (was === 'stopped' || was === 'failed') {
          this.status = { ...this.status, state: 'starting' };
        }
        return json({ state: this.status.state }, 202);
      }
      case 'GET admin/models':
        return json({ data: this.models, pulling: this.pulling });
      case 'GET admin/models/search': {
        const q = new URLSearchParams(path.split('?')[1]).get('q') ?? '';
        return json({ data: [{ id: `hub/${q}`, source: 'hub', kind: 'chat', size_bytes: 5_000 }] });
      }
      case 'POST admin/models/pull': {
        const id = String(b.id);
        const stream = new PushStream();
        this.pulls.set(id, stream);
        return new Response(stream.stream, { headers: { 'Content-Type': 'text/event-stream' } });
      }
      case 'POST admin/models/pull/cancel': {
        const stream = this.pulls.get(String(b.id));
        if (!stream) {
          return openaiError(404, 'no download of that model', 'not_found', 'id');
        }
        stream.send({ status: 'cancelled', message: 'cancelled' });
        stream.close();
        return json({ id: b.id, cancelled: true });
      }
      case 'POST admin/models/load': {
        const id = String(b.id);
        const entry = this.models.find(m => m.id === id);
        if (!entry) {
          return openaiError(404, `model ${id} not found`, 'model_not_found', 'id');
        }
        const state = {
          id,
          kind: (entry.kind ?? 'chat') as 'chat' | 'embedding',
          path: `/models/${id}`,
          dtype: 'float32',
          source_dtype: 'float32',
          context_length: 2048,
          loaded_at: 1_700_000_000,
          last_used: 1_700_000_000,
          memory_bytes: 1000,
          keep_alive: (b.keep_alive as number | undefined) ?? 300
        };
        this.status = { ...this.status, models: [...(this.status.models ?? []), state] };
        return json(state);
      }
      case 'POST admin/models/unload': {
        this.status = {
          ...this.status,
          models: (this.status.models ?? []).filter(m => m.id !== b.id)
        };
        return json({ id: b.id, unloaded: true });
      }
      case 'GET admin/keys':
        return json({ data: this.keys });
      case 'POST admin/keys': {
        const id = `key_${++this.keySeq}`;
        const name = String(b.name ?? '');
        const created = {
          id,
          name,
          key: `imp-secret-${this.keySeq}`,
          created: 1_700_000_000,
          prefix: 'imp-secr'
        };
        this.keys.push({ id, name, created: created.created, prefix: created.prefix });
        return json(created, 201);
      }
      default:
        if (method === 'DELETE' && path.startsWith('admin/keys/')) {
          const id = decodeURIComponent(path.slice('admin/keys/'.length));
          const before = this.keys.length;
          this.keys = this.keys.filter(k => k.id !== id);
          return before === this.keys.length
            ? openaiError(404, 'no such key', 'not_found')
            : new Response(null, { status: 204 });
        }
        return openaiError(404, `no route ${route}`, 'not_found');
    }
  }
}

/** Let pending promise callbacks and stream reads run. */
export async function settle(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    await new Promise(resolve => setTimeout(resolve, 0));
  }
}
