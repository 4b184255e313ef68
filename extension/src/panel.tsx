/**
 * The sidebar view: renders SidebarModel's state with React (shared from JupyterLab's core, so
 * it costs no bundle size) and turns clicks into model calls. All logic lives in the model and
 * the pure modules; this file only lays things out.
 */
import { ReactWidget, refreshIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import {
  acceleratorLabel,
  backendLabel,
  blasLabel,
  describeProgress,
  formatBytes,
  formatKeepAlive,
  formatParameters,
  formatRate,
  formatTimestamp,
  memoryView,
  progressFraction,
  stateView
} from './format';
import { sparklineArea, sparklinePoints } from './history';
import { ISidebarState, SidebarModel } from './model';
import { IModelRow, looksLikeRepoId, modelRows, preferredChatModel } from './models';
import { PROTOCOLS, Protocol, curlSnippet, openaiBaseUrl, pythonSnippet } from './snippets';
import type { IRegistryEntry } from './types';

/** What the view needs from JupyterLab, injected so the view stays free of app wiring. */
export interface IPanelHost {
  /** The server's absolute base URL (ServerConnection settings), ending with "/". */
  serverBaseUrl: string;
  copy(text: string, what: string): void;
  openChat(model: string): void;
  openBenchmarkReport(): void;
  /** Ask before something destructive; resolves true to go on. */
  confirm(title: string, body: string, action: string): Promise<boolean>;
}

export const KEEP_ALIVE_CHOICES: ReadonlyArray<{ label: string; seconds: number | undefined }> = [
  { label: 'server default', seconds: undefined },
  { label: '5 minutes', seconds: 300 },
  { label: '30 minutes', seconds: 1800 },
  { label: '1 hour', seconds: 3600 },
  { label: '1 day', seconds: 86400 },
  { label: 'forever', seconds: -1 }
];

const POLL_MS = 1000;

/** The lumino widget placed in the left area. Polls only while visible. */
export class ImpetusSidebar extends ReactWidget {
  constructor(
    readonly model: SidebarModel,
    private readonly host: IPanelHost
  ) {
    super();
    this.id = 'impetus-sidebar';
    this.addClass('jp-ImpetusSidebar');
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    void this.model.refreshAll();
    if (this.isVisible) {
      this.model.startPolling(POLL_MS);
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    // The list and the keys may have changed while the panel was closed (CLI, other tabs).
    void this.model.refreshModels(true);
    void this.model.refreshKeys();
    this.model.startPolling(POLL_MS);
  }

  protected onBeforeHide(msg: Message): void {
    super.onBeforeHide(msg);
    this.model.stopPolling();
  }

  protected onBeforeDetach(msg: Message): void {
    this.model.stopPolling();
    super.onBeforeDetach(msg);
  }

  dispose(): void {
    this.model.dispose();
    super.dispose();
  }

  render(): JSX.Element {
    return <SidebarView model={this.model} host={this.host} />;
  }
}

function useModelState(model: SidebarModel): ISidebarState {
  const [state, setState] = React.useState(model.state);
  React.useEffect(() => model.subscribe(setState), [model]);
  return state;
}

export function SidebarView(props: { model: SidebarModel; host: IPanelHost }): JSX.Element {
  const { model, host } = props;
  const state = useModelState(model);
  const rows = modelRows(state.models, state.status?.models ?? null, state.pulls, state.query);
  const allRows = state.query
    ? modelRows(state.models, state.status?.models ?? null, state.pulls, '')
    : rows;
  const chatModel = preferredChatModel(allRows);
  return (
    <div className="jp-ImpetusSidebar-body">
      <header className="jp-ImpetusSidebar-header">
        <h2>impetus</h2>
        <button
          className="jp-ImpetusSidebar-iconButton"
          title="Refresh"
          aria-label="Refresh"
          onClick={() => void model.refreshAll()}
        >
          <refreshIcon.react tag="span" />
        </button>
      </header>
      {state.error && (
        <div className="jp-ImpetusSidebar-banner" role="alert" data-testid="impetus-error">
          <span>{state.error}</span>
          <button className="jp-ImpetusSidebar-link" onClick={() => model.dismissError()}>
            dismiss
          </button>
        </div>
      )}
      <EngineSection model={model} state={state} />
      <ActivitySection model={model} state={state} />
      <ModelsSection model={model} state={state} rows={rows} host={host} />
      <EndpointSection state={state} host={host} chatModel={chatModel} />
      <KeysSection model={model} state={state} host={host} />
      <Section title="Notebooks" testId="impetus-notebooks">
        <div className="jp-ImpetusSidebar-actions">
          <button className="jp-mod-styled jp-mod-accept" onClick={() => host.openChat(chatModel)}>
            New chat ({chatModel})
          </button>
          <button className="jp-mod-styled" onClick={() => host.openBenchmarkReport()}>
            Benchmark report
          </button>
        </div>
      </Section>
    </div>
  );
}

function Section(props: {
  title: string;
  testId: string;
  children: React.ReactNode;
  extra?: React.ReactNode;
}): JSX.Element {
  return (
    <details className="jp-ImpetusSidebar-section" open data-testid={props.testId}>
      <summary>
        <span className="jp-ImpetusSidebar-sectionTitle">{props.title}</span>
        {props.extra}
      </summary>
      <div className="jp-ImpetusSidebar-sectionBody">{props.children}</div>
    </details>
  );
}

function Meter(props: { fraction: number | null; testId?: string; label: string }): JSX.Element {
  const pct = props.fraction === null ? null : Math.round(props.fraction * 1000) / 10;
  return (
    <div
      // A new element when the total becomes known, so the bar does not slide down from 100%.
      key={pct === null ? 'indeterminate' : 'determinate'}
      className={`jp-ImpetusSidebar-meter${pct === null ? ' jp-mod-indeterminate' : ''}`}
      role="progressbar"
      aria-label={props.label}
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={pct ?? undefined}
      data-testid={props.testId}
    >
      <div
        className="jp-ImpetusSidebar-meterFill"
        style={{ width: pct === null ? '100%' : `${pct}%` }}
      />
    </div>
  );
}

function EngineSection(props: { model: SidebarModel; state: ISidebarState }): JSX.Element {
  const { status, statusError, starting } = props.state;
  // inside Jupyter the engine starts on first use; Start brings it up (and retries a failed start)
  const canStart = status !== null && (status.state === 'stopped' || status.state === 'failed');
  const view = stateView(statusError || !status ? 'unreachable' : status.state);
  const waiting = !status && !statusError;
  const memory = status ? memoryView(status) : null;
  return (
    <Section
      title="Engine"
      testId="impetus-engine"
      extra={
        <span
          className={`jp-ImpetusSidebar-state jp-mod-${waiting ? 'busy' : view.tone}`}
          data-testid="impetus-engine-state"
          data-state={waiting ? 'connecting' : view.label}
        >
          {waiting ? 'connecting…' : view.label}
        </span>
      }
    >
      {statusError && <div className="jp-ImpetusSidebar-error">{statusError}</div>}
      {canStart && (
        <div className="jp-ImpetusSidebar-row">
          <span className="jp-ImpetusSidebar-muted">
            {status.state === 'stopped'
              ? 'The engine starts on first use: a request, a widget, a model load, or here.'
              : 'The engine failed to start.'}
          </span>
          <button
            className="jp-mod-styled jp-mod-accept"
            data-testid="impetus-engine-start"
            disabled={starting}
            onClick={() => void props.model.startEngine()}
          >
            {starting ? 'Starting…' : 'Start'}
          </button>
        </div>
      )}
      {status && (
        <dl className="jp-ImpetusSidebar-facts">
          <dt>Backend</dt>
          <dd
            data-testid="impetus-backend"
            title={[status.device, status.blas].filter(Boolean).join('\n')}
          >
            {backendLabel(status.backend)}
            {status.device ? ` · ${status.device}` : ''}
            {status.blas ? ` · ${blasLabel(status.blas)}` : ''}
          </dd>
          {acceleratorLabel(status) ? (
            <>
              <dt>{status.accelerator?.kind === 'cpu' ? 'CPU' : 'GPU'}</dt>
              <dd
                data-testid="impetus-accelerator"
                title={[status.accelerator?.name, status.accelerator?.what]
                  .filter(Boolean)
                  .join('\n')}
              >
                {acceleratorLabel(status)}
              </dd>
            </>
          ) : null}
          <dt>Memory</dt>
          <dd data-testid="impetus-memory">
            {memory?.text}
            <Meter fraction={memory?.fraction ?? null} label="memory in use against the budget" />
          </dd>
          {status.restarts ? (
            <>
              <dt>Restarts</dt>
              <dd>{status.restarts}</dd>
            </>
          ) : null}
          {status.last_error ? (
            <>
              <dt>Last error</dt>
              <dd className="jp-ImpetusSidebar-error">{status.last_error}</dd>
            </>
          ) : null}
        </dl>
      )}
    </Section>
  );
}

const SPARK_W = 240;
const SPARK_H = 36;

function Sparkline(props: {
  series: ReadonlyArray<{ values: number[]; className: string }>;
  capacity: number;
  max?: number;
  label: string;
  testId: string;
}): JSX.Element {
  const max = props.max ?? Math.max(1, ...props.series.flatMap(s => s.values));
  return (
    <svg
      className="jp-ImpetusSidebar-sparkline"
      viewBox={`0 0 ${SPARK_W} ${SPARK_H}`}
      preserveAspectRatio="none"
      role="img"
      aria-label={props.label}
      data-testid={props.testId}
    >
      {props.series.map(s => {
        const points = sparklinePoints(s.values, SPARK_W, SPARK_H, props.capacity, max);
        return (
          <g key={s.className} className={s.className}>
            {points && (
              <polygon
                className="jp-ImpetusSidebar-sparkArea"
                points={sparklineArea(points, SPARK_H)}
              />
            )}
            {points && <polyline className="jp-ImpetusSidebar-sparkLine" points={points} />}
          </g>
        );
      })}
    </svg>
  );
}

function ActivitySection(props: { model: SidebarModel; state: ISidebarState }): JSX.Element {
  const history = props.model.history;
  const samples = history.values();
  const latest = history.latest;
  const stats = props.state.status?.stats;
  return (
    <Section title="Activity" testId="impetus-activity">
      <div className="jp-ImpetusSidebar-sparkRow">
        <div className="jp-ImpetusSidebar-sparkLabel">
          <span className="jp-ImpetusSidebar-bigNumber" data-testid="impetus-tps">
            {formatRate(latest?.tps ?? 0)}
          </span>{' '}
          tokens/s
        </div>
        <Sparkline
          series={[{ values: samples.map(s => s.tps), className: 'jp-mod-tps' }]}
          capacity={history.capacity}
          label="tokens per second, last minute"
          testId="impetus-spark-tps"
        />
      </div>
      <div className="jp-ImpetusSidebar-sparkRow">
        <div className="jp-ImpetusSidebar-sparkLabel">
          <span className="jp-ImpetusSidebar-legend jp-mod-running" />
          <span data-testid="impetus-running">{latest?.running ?? 0}</span> running{' '}
          <span className="jp-ImpetusSidebar-legend jp-mod-waiting" />
          <span data-testid="impetus-waiting">{latest?.waiting ?? 0}</span> waiting
        </div>
        <Sparkline
          series={[
            { values: samples.map(s => s.running), className: 'jp-mod-running' },
            { values: samples.map(s => s.waiting), className: 'jp-mod-waiting' }
          ]}
          capacity={history.capacity}
          label="requests running and waiting, last minute"
          testId="impetus-spark-requests"
        />
      </div>
      {stats?.requests_total !== undefined && (
        <div className="jp-ImpetusSidebar-muted">
          {stats.requests_total} requests · {stats.generation_tokens_total ?? 0} tokens generated
        </div>
      )}
    </Section>
  );
}

function ModelsSection(props: {
  model: SidebarModel;
  state: ISidebarState;
  rows: IModelRow[];
  host: IPanelHost;
}): JSX.Element {
  const { model, state, rows, host } = props;
  const query = state.query.trim();
  const known = new Set(state.models.map(m => m.id));
  const offerPull = looksLikeRepoId(query) && !known.has(query) && !state.pulls.has(query);
  // A hub result being downloaded moves up into the model list, where its progress shows.
  const hubOnly = (state.hubResults ?? []).filter(r => !known.has(r.id) && !state.pulls.has(r.id));
  return (
    <Section title="Models" testId="impetus-models">
      <div className="jp-ImpetusSidebar-row">
        <input
          className="jp-ImpetusSidebar-input"
          type="search"
          placeholder="Filter, or a hub repo id"
          aria-label="Search models"
          data-testid="impetus-model-search"
          value={state.query}
          onChange={e => model.setQuery(e.currentTarget.value)}
          onKeyDown={e => {
            if (e.key === 'Enter') {
              void model.searchHub();
            }
          }}
        />
        <button
          className="jp-mod-styled"
          disabled={!query || state.hubSearching}
          title="Search the model hub"
          onClick={() => void model.searchHub()}
        >
          {state.hubSearching ? 'Searching…' : 'Hub'}
        </button>
      </div>
      <label
        className="jp-ImpetusSidebar-row jp-ImpetusSidebar-muted"
        title="How long a model loaded from here stays loaded while idle"
      >
        Keep-alive on load
        <select
          className="jp-ImpetusSidebar-select"
          aria-label="Keep-alive for models loaded from here"
          data-testid="impetus-keep-alive"
          value={String(KEEP_ALIVE_CHOICES.findIndex(c => c.seconds === state.keepAlive))}
          onChange={e =>
            model.setKeepAlive(KEEP_ALIVE_CHOICES[Number(e.currentTarget.value)].seconds)
          }
        >
          {KEEP_ALIVE_CHOICES.map((c, i) => (
            <option key={c.label} value={String(i)}>
              {c.label}
            </option>
          ))}
        </select>
      </label>
      {state.modelsError && <div className="jp-ImpetusSidebar-error">{state.modelsError}</div>}
      <ul className="jp-ImpetusSidebar-models" data-testid="impetus-model-list">
        {rows.map(row => (
          <ModelItem key={row.entry.id} row={row} model={model} state={state} host={host} />
        ))}
        {rows.length === 0 && !state.modelsError && (
          <li className="jp-ImpetusSidebar-muted">
            {query ? 'No local model matches.' : 'No models yet.'}
          </li>
        )}
      </ul>
      {offerPull && (
        <button
          className="jp-mod-styled jp-mod-accept jp-ImpetusSidebar-wide"
          data-testid="impetus-pull-query"
          onClick={() => void model.pull(query)}
        >
          Download {query}
        </button>
      )}
      {state.hubError && (
        <div className="jp-ImpetusSidebar-error">Hub search: {state.hubError}</div>
      )}
      {state.hubResults !== null && (
        <>
          <div className="jp-ImpetusSidebar-subtitle">From the hub</div>
          <ul className="jp-ImpetusSidebar-models" data-testid="impetus-hub-results">
            {hubOnly.map(entry => (
              <HubItem key={entry.id} entry={entry} model={model} />
            ))}
            {hubOnly.length === 0 && (
              <li className="jp-ImpetusSidebar-muted">
                {state.hubResults.length
                  ? 'Every result is in the list above.'
                  : 'Nothing found on the hub.'}
              </li>
            )}
          </ul>
        </>
      )}
    </Section>
  );
}

function entryFacts(entry: IRegistryEntry): string {
  const size = entry.size_bytes;
  return [
    entry.kind,
    formatParameters(entry.parameters),
    entry.quantization,
    size ? formatBytes(size) : null,
    entry.source
  ]
    .filter(Boolean)
    .join(' · ');
}

function PullProgress(props: {
  id: string;
  model: SidebarModel;
  state: ISidebarState;
}): JSX.Element | null {
  const { id, model, state } = props;
  const pull = state.pulls.get(id);
  if (!pull) {
    return null;
  }
  const active = pull.status === 'downloading' || pull.status === 'converting';
  return (
    <div className="jp-ImpetusSidebar-pull" data-testid="impetus-pull" data-status={pull.status}>
      <Meter
        fraction={active || pull.status === 'done' ? progressFraction(pull) : 0}
        label={`download of ${id}`}
        testId="impetus-pull-bar"
      />
      <div className="jp-ImpetusSidebar-row">
        <span
          className={`jp-ImpetusSidebar-muted jp-mod-${pull.status}`}
          data-testid="impetus-pull-text"
          title={pull.message ?? undefined}
        >
          {describeProgress(pull)}
        </span>
        {active ? (
          <button
            className="jp-mod-styled jp-mod-warn"
            disabled={state.busy.get(id) === 'cancelling'}
            onClick={() => void model.cancelPull(id)}
          >
            Cancel
          </button>
        ) : (
          <button className="jp-ImpetusSidebar-link" onClick={() => model.dismissPull(id)}>
            dismiss
          </button>
        )}
      </div>
    </div>
  );
}

function ModelItem(props: {
  row: IModelRow;
  model: SidebarModel;
  state: ISidebarState;
  host: IPanelHost;
}): JSX.Element {
  const { row, model, state, host } = props;
  const id = row.entry.id;
  const busy = state.busy.get(id);
  const pulling = model.isPulling(id);
  const isChat = (row.state?.kind ?? row.entry.kind ?? 'chat') === 'chat';
  const badge = row.loaded ? 'loaded' : row.downloaded ? 'downloaded' : 'remote';
  return (
    <li
      className="jp-ImpetusSidebar-model"
      data-model-id={id}
      data-status={badge}
      data-testid="impetus-model"
    >
      <div className="jp-ImpetusSidebar-row">
        <span className="jp-ImpetusSidebar-modelId" title={id}>
          {id}
        </span>
        <span
          className={`jp-ImpetusSidebar-badge jp-mod-${badge}`}
          data-testid="impetus-model-status"
        >
          {busy ?? (pulling ? 'downloading' : badge)}
        </span>
      </div>
      <div className="jp-ImpetusSidebar-muted">{entryFacts(row.entry)}</div>
      {row.state && (
        <div className="jp-ImpetusSidebar-muted">
          {row.state.dtype ? `serving ${row.state.dtype} · ` : ''}
          {formatBytes(row.state.memory_bytes)}
          {/* The engine pins a model exactly when its keep-alive is negative: "forever". */}
          {` · keep-alive ${formatKeepAlive(row.state.pinned ? -1 : row.state.keep_alive)}`}
          {row.state.active_requests ? ` · ${row.state.active_requests} active` : ''}
        </div>
      )}
      <PullProgress id={id} model={model} state={state} />
      <div className="jp-ImpetusSidebar-actions">
        {row.loaded ? (
          <button
            className="jp-mod-styled"
            disabled={Boolean(busy)}
            onClick={() => void model.unload(id)}
          >
            Unload
          </button>
        ) : row.downloaded ? (
          <button
            className="jp-mod-styled jp-mod-accept"
            disabled={Boolean(busy) || pulling}
            onClick={() => void model.load(id)}
          >
            Load
          </button>
        ) : (
          !pulling && (
            <button className="jp-mod-styled jp-mod-accept" onClick={() => void model.pull(id)}>
              Download
            </button>
          )
        )}
        {row.loaded && isChat && (
          <button className="jp-mod-styled" onClick={() => host.openChat(id)}>
            Chat
          </button>
        )}
        {row.downloaded && !row.loaded && !pulling && row.entry.source !== 'builtin' && (
          <button
            className="jp-mod-styled jp-mod-warn"
            disabled={Boolean(busy)}
            onClick={() =>
              void host
                .confirm('Delete model', `Delete the local files of ${id}?`, 'Delete')
                .then(ok => (ok ? model.deleteModel(id) : false))
            }
          >
            Delete
          </button>
        )}
      </div>
    </li>
  );
}

function HubItem(props: { entry: IRegistryEntry; model: SidebarModel }): JSX.Element {
  const { entry, model } = props;
  const facts = [
    entry.pipeline_tag,
    typeof entry.downloads === 'number' ? `${entry.downloads} downloads` : null,
    typeof entry.likes === 'number' ? `${entry.likes} likes` : null
  ]
    .filter(Boolean)
    .join(' · ');
  return (
    <li
      className="jp-ImpetusSidebar-model"
      data-model-id={entry.id}
      data-testid="impetus-hub-model"
    >
      <div className="jp-ImpetusSidebar-row">
        <span className="jp-ImpetusSidebar-modelId" title={entry.id}>
          {entry.id}
        </span>
      </div>
      <div className="jp-ImpetusSidebar-muted">{facts || entryFacts(entry)}</div>
      <div className="jp-ImpetusSidebar-actions">
        <button className="jp-mod-styled jp-mod-accept" onClick={() => void model.pull(entry.id)}>
          Download
        </button>
      </div>
    </li>
  );
}

function EndpointSection(props: {
  state: ISidebarState;
  host: IPanelHost;
  chatModel: string;
}): JSX.Element {
  const { state, host, chatModel } = props;
  const baseUrl = openaiBaseUrl(host.serverBaseUrl);
  const key = state.newKey?.key ?? null;
  const [protocol, setProtocol] = React.useState<Protocol>('openai');
  return (
    <Section title="Endpoint" testId="impetus-endpoint">
      <div className="jp-ImpetusSidebar-muted">OpenAI base URL</div>
      <div className="jp-ImpetusSidebar-row">
        <input
          className="jp-ImpetusSidebar-input jp-ImpetusSidebar-mono"
          readOnly
          value={baseUrl}
          aria-label="OpenAI base URL"
          data-testid="impetus-base-url"
          onFocus={e => e.currentTarget.select()}
        />
        <button className="jp-mod-styled" onClick={() => host.copy(baseUrl, 'Base URL')}>
          Copy
        </button>
      </div>
      <div className="jp-ImpetusSidebar-actions">
        <select
          className="jp-mod-styled"
          aria-label="Snippet protocol"
          data-testid="impetus-snippet-protocol"
          value={protocol}
          onChange={e => setProtocol(e.currentTarget.value as Protocol)}
        >
          {PROTOCOLS.map(p => (
            <option key={p.id} value={p.id}>
              {p.label}
            </option>
          ))}
        </select>
        <button
          className="jp-mod-styled"
          data-testid="impetus-copy-python"
          onClick={() =>
            host.copy(pythonSnippet(baseUrl, chatModel, key, protocol), 'Python snippet')
          }
        >
          Copy Python
        </button>
        <button
          className="jp-mod-styled"
          data-testid="impetus-copy-curl"
          onClick={() => host.copy(curlSnippet(baseUrl, chatModel, key, protocol), 'curl command')}
        >
          Copy curl
        </button>
        <a
          className="jp-ImpetusSidebar-link"
          href={`${host.serverBaseUrl}impetus/docs`}
          target="_blank"
          rel="noopener noreferrer"
        >
          API explorer
        </a>
      </div>
      <div className="jp-ImpetusSidebar-muted">
        {key
          ? 'Snippets include the key just created.'
          : 'Snippets read the key from $IMPETUS_API_KEY; create one below.'}
      </div>
    </Section>
  );
}

function KeysSection(props: {
  model: SidebarModel;
  state: ISidebarState;
  host: IPanelHost;
}): JSX.Element {
  const { model, state, host } = props;
  const [creating, setCreating] = React.useState(false);
  return (
    <Section title="API keys" testId="impetus-keys">
      <div className="jp-ImpetusSidebar-muted">
        Inference-only keys for OpenAI clients: they cannot run code on this server.
      </div>
      {state.newKey && (
        <div className="jp-ImpetusSidebar-newKey" data-testid="impetus-new-key">
          <div>Copy the key now: it will not be shown again.</div>
          <div className="jp-ImpetusSidebar-row">
            <input
              className="jp-ImpetusSidebar-input jp-ImpetusSidebar-mono"
              readOnly
              value={state.newKey.key}
              aria-label="New API key"
              data-testid="impetus-new-key-value"
              onFocus={e => e.currentTarget.select()}
            />
            <button
              className="jp-mod-styled"
              onClick={() => host.copy(state.newKey?.key ?? '', 'API key')}
            >
              Copy
            </button>
          </div>
          <button className="jp-ImpetusSidebar-link" onClick={() => model.dismissNewKey()}>
            Done, hide it
          </button>
        </div>
      )}
      {state.keysError && <div className="jp-ImpetusSidebar-error">{state.keysError}</div>}
      <ul className="jp-ImpetusSidebar-keys" data-testid="impetus-key-list">
        {state.keys.map(k => (
          <li key={k.id} className="jp-ImpetusSidebar-row" data-key-id={k.id}>
            <span className="jp-ImpetusSidebar-mono" title={k.id}>
              {k.name || k.prefix || k.id}
            </span>
            <span className="jp-ImpetusSidebar-muted">{formatTimestamp(k.created)}</span>
            <button
              className="jp-mod-styled jp-mod-warn"
              onClick={() =>
                void host
                  .confirm(
                    'Revoke API key',
                    `Revoke ${k.name || k.prefix || k.id}? Clients using it stop working.`,
                    'Revoke'
                  )
                  .then(ok => (ok ? model.revokeKey(k.id) : false))
              }
            >
              Revoke
            </button>
          </li>
        ))}
        {state.keys.length === 0 && !state.keysError && (
          <li className="jp-ImpetusSidebar-muted">No keys yet.</li>
        )}
      </ul>
      <button
        className="jp-mod-styled jp-mod-accept jp-ImpetusSidebar-wide"
        disabled={creating}
        data-testid="impetus-create-key"
        onClick={() => {
          setCreating(true);
          void model.createKey().finally(() => setCreating(false));
        }}
      >
        Create API key
      </button>
    </Section>
  );
}
