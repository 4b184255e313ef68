import { afterEach, describe, expect, it, vi } from 'vitest';

import { ImpetusApi } from '../src/api';
import { SidebarModel } from '../src/model';
import type { IPullProgress } from '../src/types';
import { FakeServer, PushStream, json, openaiError, settle } from './fake-server';

function setup(): { server: FakeServer; model: SidebarModel; errors: string[] } {
  const server = new FakeServer();
  const errors: string[] = [];
  const model = new SidebarModel(new ImpetusApi(server.fetch), { onError: m => errors.push(m) });
  return { server, model, errors };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('SidebarModel', () => {
  it('loads everything and notifies subscribers', async () => {
    const { model } = setup();
    const seen: number[] = [];
    model.subscribe(s => seen.push(s.models.length));
    await model.refreshAll();
    expect(model.state.status?.state).toBe('ready');
    expect(model.state.models).toHaveLength(3);
    expect(model.state.keys).toEqual([]);
    expect(seen.length).toBeGreaterThanOrEqual(3);
    expect(model.history.length).toBe(1);
  });

  it('starts an engine that is not started (lazy start) and shows it starting', async () => {
    const { server, model, errors } = setup();
    server.status = { ...server.status, state: 'stopped', models: [] };
    await model.refreshStatus();
    expect(model.state.status?.state).toBe('stopped');
    const seen: boolean[] = [];
    model.subscribe(s => seen.push(s.starting));
    expect(await model.startEngine()).toBe(true);
    expect(seen[0]).toBe(true);
    expect(model.state.starting).toBe(false);
    expect(model.state.status?.state).toBe('starting');
    const start = server.requests.filter(r => r.path === 'admin/engine/start');
    expect(start).toHaveLength(1);
    expect(start[0].method).toBe('POST');
    expect(errors).toEqual([]);
  });

  it('reports a refused start', async () => {
    const { server, model, errors } = setup();
    server.override = r =>
      r.path === 'admin/engine/start'
        ? openaiError(503, 'the server is shutting down', 'shutting_down')
        : undefined;
    expect(await model.startEngine()).toBe(false);
    expect(errors[0]).toMatch(/Engine start: the server is shutting down/);
    expect(model.state.starting).toBe(false);
  });

  it('shows an unreachable engine and recovers', async () => {
    const { server, model } = setup();
    server.override = r =>
      r.path === 'admin/status' ? json({ message: 'Not Found' }, 404) : undefined;
    await model.refreshStatus();
    expect(model.state.statusError).toMatch(/server extension is not running.*HTTP 404/);
    server.override = r =>
      r.path === 'admin/status'
        ? json({ error: { message: 'engine restarting' } }, 503)
        : undefined;
    await model.refreshStatus();
    expect(model.state.statusError).toBe('engine restarting (HTTP 503)');
    server.override = null;
    await model.refreshStatus();
    expect(model.state.statusError).toBeNull();
  });

  it('follows a download to completion and refreshes the list', async () => {
    const { server, model } = setup();
    const statuses: string[] = [];
    model.subscribe(s => {
      const p = s.pulls.get('org/remote-model');
      if (p && statuses[statuses.length - 1] !== `${p.status}:${p.bytes_done ?? ''}`) {
        statuses.push(`${p.status}:${p.bytes_done ?? ''}`);
      }
    });
    const done = model.pull('org/remote-model');
    await settle();
    expect(model.isPulling('org/remote-model')).toBe(true);
    const stream = server.pulls.get('org/remote-model') as PushStream;
    stream.send({ status: 'downloading', bytes_done: 400, bytes_total: 1000 });
    await settle();
    expect(model.state.pulls.get('org/remote-model')?.bytes_done).toBe(400);
    server.models = server.models.map(m =>
      m.id === 'org/remote-model' ? { ...m, downloaded: true } : m
    );
    stream.send({ status: 'done', bytes_done: 1000, bytes_total: 1000 });
    const final = await done;
    expect(final.status).toBe('done');
    expect(statuses).toEqual(['downloading:0', 'downloading:400', 'done:1000']);
    expect(model.isPulling('org/remote-model')).toBe(false);
    expect(model.state.models.find(m => m.id === 'org/remote-model')?.downloaded).toBe(true);
  });

  it('follows a download the server runs for someone else', async () => {
    const { server, model } = setup();
    server.pulling = ['org/remote-model'];
    await model.refreshModels();
    await settle();
    expect(server.requests.filter(r => r.path === 'admin/models/pull').map(r => r.body)).toEqual([
      { id: 'org/remote-model', load: false }
    ]);
    expect(model.isPulling('org/remote-model')).toBe(true);
    server.pulling = [];
    (server.pulls.get('org/remote-model') as PushStream).send({ status: 'done' });
    await settle();
    expect(model.state.pulls.get('org/remote-model')?.status).toBe('done');
    await model.refreshModels(); // no second follow of a finished one
    expect(server.requests.filter(r => r.path === 'admin/models/pull')).toHaveLength(1);
  });

  it('does not start a second download of the same model', async () => {
    const { server, model } = setup();
    const first = model.pull('x');
    await settle();
    await model.pull('x');
    expect(server.requests.filter(r => r.path === 'admin/models/pull')).toHaveLength(1);
    (server.pulls.get('x') as PushStream).send({ status: 'done' });
    await first;
  });

  it('cancels a download through the server', async () => {
    const { server, model, errors } = setup();
    const busy: string[] = [];
    model.subscribe(s => busy.push(s.busy.get('org/remote-model') ?? '-'));
    const done = model.pull('org/remote-model');
    await settle();
    (server.pulls.get('org/remote-model') as PushStream).send({
      status: 'downloading',
      bytes_done: 1,
      bytes_total: 10
    });
    await settle();
    await model.cancelPull('org/remote-model');
    expect(busy).toContain('cancelling');
    const final: IPullProgress = await done;
    expect(final.status).toBe('cancelled');
    expect(model.state.busy.has('org/remote-model')).toBe(false);
    expect(server.requests.find(r => r.path === 'admin/models/pull/cancel')?.body).toEqual({
      id: 'org/remote-model'
    });
    expect(errors).toEqual([]);
    model.dismissPull('org/remote-model');
    expect(model.state.pulls.size).toBe(0);
  });

  it('stops reading when the server cannot be told to cancel', async () => {
    const { server, model, errors } = setup();
    server.override = r =>
      r.path === 'admin/models/pull/cancel' ? json({ error: { message: 'gone' } }, 500) : undefined;
    const done = model.pull('y');
    await settle();
    await model.cancelPull('y');
    const final = await done;
    expect(final.status).toBe('error');
    expect(final.message).toMatch(/stopped following/);
    expect(errors[0]).toBe('Cancel of y: gone (HTTP 500)');
    expect((server.pulls.get('y') as PushStream).cancelled).toBe(true);
  });

  it('loads with the chosen keep-alive and unloads, refreshing the status', async () => {
    const { server, model } = setup();
    model.setKeepAlive(1800);
    expect(await model.load('minilm')).toBe(true);
    expect(server.requests.find(r => r.path === 'admin/models/load')?.body).toEqual({
      id: 'minilm',
      keep_alive: 1800
    });
    expect(model.state.status?.models?.map(m => m.id)).toEqual(['smollm2-135m', 'minilm']);
    expect(await model.unload('smollm2-135m')).toBe(true);
    expect(model.state.status?.models?.map(m => m.id)).toEqual(['minilm']);
    expect(model.state.busy.size).toBe(0);
  });

  it('reports a failed load in the banner and to onError', async () => {
    const { model, errors } = setup();
    expect(await model.load('missing')).toBe(false);
    expect(model.state.error).toBe('Load of missing: model missing not found (HTTP 404)');
    expect(errors).toEqual([model.state.error]);
    model.dismissError();
    expect(model.state.error).toBeNull();
  });

  it('shows a new key once and forgets it on dismiss or revoke', async () => {
    const { model } = setup();
    const created = await model.createKey();
    expect(model.state.newKey?.key).toBe(created?.key);
    expect(model.state.keys.map(k => k.id)).toEqual([created?.id]);
    model.dismissNewKey();
    expect(model.state.newKey).toBeNull();
    expect(JSON.stringify(model.state)).not.toContain(created?.key as string);
    const second = await model.createKey();
    expect(await model.revokeKey(second?.id as string)).toBe(true);
    expect(model.state.newKey).toBeNull();
    expect(model.state.keys.map(k => k.id)).toEqual([created?.id]);
  });

  it('searches the hub for the current query only', async () => {
    const { model } = setup();
    model.setQuery('qwen');
    await model.searchHub();
    expect(model.state.hubResults?.map(r => r.id)).toEqual(['hub/qwen']);
    model.setQuery('llama');
    expect(model.state.hubResults).toBeNull();
  });

  it('polls once a second without overlapping, and stops', async () => {
    vi.useFakeTimers();
    const { server, model } = setup();
    model.startPolling(1000);
    model.startPolling(1000); // a second start is a no-op
    await vi.advanceTimersByTimeAsync(3500);
    const polls = server.requests.filter(r => r.path === 'admin/status').length;
    expect(polls).toBe(4); // t = 0, 1, 2, 3 s
    expect(model.history.length).toBe(4);
    model.stopPolling();
    await vi.advanceTimersByTimeAsync(5000);
    expect(server.requests.filter(r => r.path === 'admin/status').length).toBe(polls);
  });
});
