/**
 * The sidebar's state and actions, with no DOM and no JupyterLab: the React view renders
 * `state` and calls these methods; unit tests drive them against a fake transport.
 */
import { ImpetusApi } from './api';
import { ApiError, describeError } from './errors';
import { ActivityHistory } from './history';
import type {
  IApiKeyInfo,
  ICreatedKey,
  IEngineStatus,
  IPullProgress,
  IRegistryEntry
} from './types';

export type BusyAction = 'loading' | 'unloading' | 'cancelling' | 'deleting';

export interface ISidebarState {
  status: IEngineStatus | null;
  /** Why the last status request failed; null while the engine answers. */
  statusError: string | null;
  models: IRegistryEntry[];
  modelsError: string | null;
  query: string;
  /** Results of the last hub search; null when none was run for the current query. */
  hubResults: IRegistryEntry[] | null;
  hubSearching: boolean;
  hubError: string | null;
  /** Download progress by model id; the last event stays until the next pull or dismiss. */
  pulls: ReadonlyMap<string, IPullProgress>;
  busy: ReadonlyMap<string, BusyAction>;
  /** Keep-alive seconds sent with a load; undefined: the server's default. */
  keepAlive: number | undefined;
  keys: IApiKeyInfo[];
  keysError: string | null;
  /** A key just created: its secret is shown once, then dropped by `dismissNewKey`. */
  newKey: ICreatedKey | null;
  /** The last failed action, for the banner. */
  error: string | null;
  /** A Start request is on its way. */
  starting: boolean;
}

export interface ISidebarModelOptions {
  /** Called for every failed action besides showing it in the banner (JupyterLab notifications). */
  onError?: (message: string) => void;
  /** Called when an action succeeded with something worth telling. */
  onInfo?: (message: string) => void;
  /** Samples of activity kept for the sparklines (one per poll). */
  historySize?: number;
  /** How many status polls between two refreshes of the model list (downloads done elsewhere). */
  modelsEvery?: number;
}

type Listener = (state: ISidebarState) => void;

/** Why the engine status is unknown, in words that say what to do. */
export function statusErrorText(err: unknown): string {
  if (err instanceof ApiError && err.status === 404) {
    return (
      'The impetus server extension is not running in this Jupyter server (HTTP 404). ' +
      'Enable it with `jupyter server extension enable impetus` and restart JupyterLab.'
    );
  }
  return describeError(err);
}

export class SidebarModel {
  readonly history: ActivityHistory;
  private _state: ISidebarState = {
    status: null,
    statusError: null,
    models: [],
    modelsError: null,
    query: '',
    hubResults: null,
    hubSearching: false,
    hubError: null,
    pulls: new Map(),
    busy: new Map(),
    keepAlive: undefined,
    keys: [],
    keysError: null,
    newKey: null,
    error: null,
    starting: false
  };
  private readonly listeners = new Set<Listener>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private polling = false;
  private ticks = 0;
  private readonly pullAborts = new Map<string, AbortController>();
  private readonly modelsEvery: number;

  constructor(
    readonly api: ImpetusApi,
    private readonly options: ISidebarModelOptions = {}
  ) {
    this.history = new ActivityHistory(options.historySize ?? 60);
    this.modelsEvery = options.modelsEvery ?? 15;
  }

  get state(): ISidebarState {
    return this._state;
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private set(patch: Partial<ISidebarState>): void {
    this._state = { ...this._state, ...patch };
    for (const listener of [...this.listeners]) {
      listener(this._state);
    }
  }

  private fail(err: unknown, prefix: string): string {
    const message = `${prefix}: ${describeError(err)}`;
    this.set({ error: message });
    this.options.onError?.(message);
    return message;
  }

  dismissError(): void {
    this.set({ error: null });
  }

  // ---- status and polling --------------------------------------------------------------

  async refreshStatus(): Promise<IEngineStatus | null> {
    try {
      const status = await this.api.status();
      this.history.addStatus(status);
      this.set({ status, statusError: null });
      return status;
    } catch (err) {
      this.set({ statusError: statusErrorText(err) });
      return null;
    }
  }

  /** Poll status every `intervalMs` (never two requests at once) until `stopPolling`. */
  startPolling(intervalMs = 1000): void {
    if (this.polling) {
      return;
    }
    this.polling = true;
    const tick = async (): Promise<void> => {
      if (!this.polling) {
        return;
      }
      await this.refreshStatus();
      this.ticks++;
      if (this.ticks % this.modelsEvery === 0) {
        await this.refreshModels(true);
      }
      if (this.polling) {
        this.timer = setTimeout(() => void tick(), intervalMs);
      }
    };
    void tick();
  }

  stopPolling(): void {
    this.polling = false;
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  get isPolling(): boolean {
    return this.polling;
  }

  /** Everything the panel shows, once (on first show and on the refresh button). */
  async refreshAll(): Promise<void> {
    await Promise.all([this.refreshStatus(), this.refreshModels(), this.refreshKeys()]);
  }

  // ---- models --------------------------------------------------------------------------

  async refreshModels(quiet = false): Promise<void> {
    try {
      const { models, pulling } = await this.api.modelList();
      this.set({ models, modelsError: null });
      // Downloads run on the server, not in the page: follow those this page did not start
      // (started before a reload, from another tab or the CLI). Posting the same id joins them.
      for (const id of pulling) {
        if (!this._state.pulls.has(id) && !this.pullAborts.has(id)) {
          void this.pull(id);
        }
      }
    } catch (err) {
      if (!quiet || this._state.models.length === 0) {
        this.set({ modelsError: describeError(err) });
      }
    }
  }

  setQuery(query: string): void {
    // Hub results belong to the query they were searched for.
    this.set({
      query,
      hubResults: query === this._state.query ? this._state.hubResults : null,
      hubError: null
    });
  }

  async searchHub(): Promise<void> {
    const query = this._state.query.trim();
    if (!query) {
      return;
    }
    this.set({ hubSearching: true, hubError: null });
    try {
      const results = await this.api.searchHub(query);
      if (this._state.query.trim() === query) {
        this.set({ hubResults: results, hubSearching: false });
      } else {
        this.set({ hubSearching: false });
      }
    } catch (err) {
      this.set({ hubSearching: false, hubError: describeError(err) });
    }
  }

  private setPull(id: string, progress: IPullProgress | null): void {
    const pulls = new Map(this._state.pulls);
    if (progress) {
      pulls.set(id, progress);
    } else {
      pulls.delete(id);
    }
    this.set({ pulls });
  }

  private setBusy(id: string, action: BusyAction | null): void {
    const busy = new Map(this._state.busy);
    if (action) {
      busy.set(id, action);
    } else {
      busy.delete(id);
    }
    this.set({ busy });
  }

  isPulling(id: string): boolean {
    const p = this._state.pulls.get(id);
    return p !== undefined && (p.status === 'downloading' || p.status === 'converting');
  }

  /** Download `id`, following its progress; resolves with the final event. */
  async pull(id: string, options: { load?: boolean } = {}): Promise<IPullProgress> {
    if (this.isPulling(id)) {
      return this._state.pulls.get(id) as IPullProgress;
    }
    const abort = new AbortController();
    this.pullAborts.set(id, abort);
    this.setPull(id, { id, status: 'downloading', bytes_done: 0, bytes_total: null });
    let final: IPullProgress;
    try {
      final = await this.api.pull(id, progress => this.setPull(id, progress), {
        load: options.load,
        signal: abort.signal
      });
    } catch (err) {
      final = { id, status: 'error', message: describeError(err) };
      this.setPull(id, final);
    } finally {
      this.pullAborts.delete(id);
      this.setBusy(id, null);
    }
    if (final.status === 'error') {
      this.fail(final.message ?? 'failed', `Download of ${id}`);
    } else if (final.status === 'done') {
      this.options.onInfo?.(`Downloaded ${id}`);
    }
    await this.refreshModels();
    if (options.load) {
      await this.refreshStatus();
    }
    return final;
  }

  /** Ask the server to stop a download; the stream then ends with `cancelled`. */
  async cancelPull(id: string): Promise<void> {
    this.setBusy(id, 'cancelling');
    try {
      await this.api.cancelPull(id);
    } catch (err) {
      this.setBusy(id, null);
      // The server could not be told: at least stop reading, so the UI is not stuck.
      this.pullAborts.get(id)?.abort();
      this.fail(err, `Cancel of ${id}`);
    }
  }

  dismissPull(id: string): void {
    if (!this.isPulling(id)) {
      this.setPull(id, null);
    }
  }

  setKeepAlive(seconds: number | undefined): void {
    this.set({ keepAlive: seconds });
  }

  async load(id: string, keepAlive: number | undefined = this._state.keepAlive): Promise<boolean> {
    this.setBusy(id, 'loading');
    try {
      await this.api.load(id, { keepAlive });
      this.options.onInfo?.(`Loaded ${id}`);
      return true;
    } catch (err) {
      this.fail(err, `Load of ${id}`);
      return false;
    } finally {
      this.setBusy(id, null);
      await this.refreshStatus();
    }
  }

  /** The Start button: start the engine now, then show its state (starting, then ready). */
  async startEngine(): Promise<boolean> {
    this.set({ starting: true });
    try {
      await this.api.startEngine();
      return true;
    } catch (err) {
      this.fail(err, 'Engine start');
      return false;
    } finally {
      this.set({ starting: false });
      await this.refreshStatus();
    }
  }

  async unload(id: string): Promise<boolean> {
    this.setBusy(id, 'unloading');
    try {
      await this.api.unload(id);
      return true;
    } catch (err) {
      this.fail(err, `Unload of ${id}`);
      return false;
    } finally {
      this.setBusy(id, null);
      await this.refreshStatus();
    }
  }

  async deleteModel(id: string): Promise<boolean> {
    this.setBusy(id, 'deleting');
    try {
      await this.api.deleteModel(id);
      return true;
    } catch (err) {
      this.fail(err, `Delete of ${id}`);
      return false;
    } finally {
      this.setBusy(id, null);
      await Promise.all([this.refreshModels(), this.refreshStatus()]);
    }
  }

  // ---- API keys ------------------------------------------------------------------------

  async refreshKeys(): Promise<void> {
    try {
      this.set({ keys: await this.api.keys(), keysError: null });
    } catch (err) {
      this.set({ keysError: describeError(err) });
    }
  }

  async createKey(name?: string): Promise<ICreatedKey | null> {
    try {
      const created = await this.api.createKey(name);
      this.set({ newKey: created });
      await this.refreshKeys();
      return created;
    } catch (err) {
      this.fail(err, 'New API key');
      return null;
    }
  }

  /** Forget the secret of the key just created: it is never shown again. */
  dismissNewKey(): void {
    this.set({ newKey: null });
  }

  async revokeKey(keyId: string): Promise<boolean> {
    try {
      await this.api.revokeKey(keyId);
      if (this._state.newKey?.id === keyId) {
        this.set({ newKey: null });
      }
      return true;
    } catch (err) {
      this.fail(err, 'Revoke key');
      return false;
    } finally {
      await this.refreshKeys();
    }
  }

  dispose(): void {
    this.stopPolling();
    for (const abort of this.pullAborts.values()) {
      abort.abort();
    }
    this.listeners.clear();
  }
}
