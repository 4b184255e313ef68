/**
 * The shapes of the admin API as the sidebar reads them: names for the types generated from the
 * server's OpenAPI document into ./openapi.ts (`make -C extension types` regenerates it from
 * `python -m impetus.api.routes`; `make lint` fails when it is out of date). Nothing here
 * describes a field by hand: a field renamed on the server is renamed here by the generator.
 */
import type { components } from './openapi';

type Schemas = components['schemas'];

/** `EngineStatus.state`; `unreachable` is the sidebar's own: the status request itself failed. */
export type EngineState = Schemas['AdminStatus']['state'] | 'unreachable';

export type IModelState = Schemas['ModelState'];

export type IEngineStats = Schemas['EngineStats'];

/** What the engine's accelerator is doing, and how it was read (NVML, psutil...). */
export type IAcceleratorInfo = Schemas['AcceleratorInfo'];

/** `GET admin/status`: the engine's status plus the OpenAI base URL as the server sees it. */
export type IEngineStatus = Schemas['AdminStatus'];

/**
 * One row of `GET admin/models` (local registry) or of `GET admin/models/search` (hub): the
 * sidebar lists both, so every field but the id may be absent.
 */
export type IRegistryEntry = Partial<Schemas['RegistryEntry']> &
  Partial<Schemas['HubModel']> & { id: string };

export type PullStatus = Schemas['PullProgress']['status'];

/** One SSE event of `POST admin/models/pull`. */
export type IPullProgress = Schemas['PullProgress'];

/** An inference-only API key as listed: the secret itself is only in `ICreatedKey`. */
export type IApiKeyInfo = Schemas['APIKeyInfo'];

export type ICreatedKey = Schemas['CreatedKey'];

/** Options of the sidebar's own load call (not a server shape: it becomes `LoadRequest`). */
export interface ILoadOptions {
  /** Seconds an idle model stays loaded; negative: forever; undefined: the server default. */
  keepAlive?: number;
  dtype?: Schemas['LoadRequest']['dtype'];
}
