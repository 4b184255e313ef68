/**
 * The shapes of the admin API (docs/architecture.md, "HTTP surface"), as the sidebar reads them.
 *
 * They mirror the pydantic models of impetus.engine.types; fields the sidebar does not show are
 * left out, and everything the server may omit is optional so that an older server still renders.
 */

/** `EngineStatus.state`; `unreachable` is the sidebar's own: the status request itself failed. */
export type EngineState =
  | 'starting'
  | 'ready'
  | 'restarting'
  | 'stopped'
  | 'failed'
  | 'unreachable';

export interface IModelState {
  id: string;
  kind: 'chat' | 'embedding';
  dtype?: string;
  source_dtype?: string;
  memory_bytes?: number;
  context_length?: number;
  loaded_at?: number;
  last_used?: number;
  pinned?: boolean;
  keep_alive?: number | null;
  active_requests?: number;
  load_seconds?: number;
}

export interface IEngineStats {
  running: number;
  waiting: number;
  prompt_tokens_total?: number;
  generation_tokens_total?: number;
  requests_total?: number;
  decode_tps_recent: number;
}

/** What the engine's accelerator is doing, and how it was read (NVML, psutil...). */
export interface IAcceleratorInfo {
  kind: string;
  source: string;
  name: string;
  /** What `utilization_percent` measures, in words. */
  what: string;
  utilization_percent?: number | null;
  memory_used_bytes?: number | null;
  memory_total_bytes?: number | null;
  process_memory_bytes?: number | null;
  power_watts?: number | null;
  temperature_celsius?: number | null;
}

export interface IEngineStatus {
  state: Exclude<EngineState, 'unreachable'>;
  pid?: number | null;
  backend?: string;
  device?: string;
  blas?: string;
  memory_budget?: number;
  memory_used?: number;
  peak_memory?: number;
  process_rss?: number;
  restarts?: number;
  last_error?: string | null;
  models?: IModelState[];
  stats?: Partial<IEngineStats>;
  accelerator?: IAcceleratorInfo | null;
  /** The OpenAI base URL as the server sees it (absolute or relative to the page). */
  endpoint?: string;
}

/** One row of `GET admin/models` (local registry) or `GET admin/models/search` (hub). */
export interface IRegistryEntry {
  id: string;
  source?: string;
  kind?: string;
  /** Bytes on disk; null when unknown. (`size` is accepted from older servers.) */
  size_bytes?: number | null;
  size?: number | null;
  /** Estimated weight memory when loaded in `serving_dtype`. */
  memory_bytes?: number | null;
  serving_dtype?: string | null;
  parameters?: number | null;
  context_length?: number | null;
  quantization?: string | null;
  loaded?: boolean;
  downloaded?: boolean;
  description?: string | null;
  /** Hub search results: popularity and task. */
  downloads?: number | null;
  likes?: number | null;
  pipeline_tag?: string | null;
  [extra: string]: unknown;
}

export type PullStatus = 'downloading' | 'converting' | 'done' | 'error' | 'cancelled';

/** One SSE event of `POST admin/models/pull`. */
export interface IPullProgress {
  status: PullStatus;
  bytes_done?: number;
  bytes_total?: number | null;
  /** Bytes per second. */
  speed?: number | null;
  /** Seconds left. */
  eta?: number | null;
  message?: string | null;
  id?: string;
  /** The file being fetched. */
  file?: string | null;
}

/** An inference-only API key as listed: the secret itself is only in `ICreatedKey`. */
export interface IApiKeyInfo {
  id: string;
  created?: number | string;
  name?: string | null;
  prefix?: string | null;
  last_used?: number | string | null;
  [extra: string]: unknown;
}

export interface ICreatedKey extends IApiKeyInfo {
  key: string;
}

export interface ILoadOptions {
  /** Seconds an idle model stays loaded; negative: forever; undefined: the server default. */
  keepAlive?: number;
  dtype?: string;
}
