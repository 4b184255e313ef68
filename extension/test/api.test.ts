import { describe, expect, it } from 'vitest';

import { ImpetusApi, normaliseProgress } from '../src/api';
import { ApiError, describeError, errorFromBody } from '../src/errors';
import type { IPullProgress } from '../src/types';
import { FakeServer, PushStream, json, settle } from './fake-server';

describe('errors', () => {
  it('reads the OpenAI error shape', () => {
    const err = errorFromBody(
      {
        error: {
          message: 'model x not found',
          type: 'invalid_request_error',
          param: 'model',
          code: 'model_not_found'
        }
      },
      404
    );
    expect(err).toBeInstanceOf(ApiError);
    expect([err.message, err.status, err.code, err.param]).toEqual([
      'model x not found',
      404,
      'model_not_found',
      'model'
    ]);
    expect(describeError(err)).toBe('model x not found (HTTP 404)');
  });

  it("reads Jupyter's own error shape and plain text", () => {
    expect(errorFromBody({ message: 'Forbidden', reason: 'xsrf' }, 403).message).toBe('Forbidden');
    expect(errorFromBody('Bad Gateway', 502).message).toBe('Bad Gateway');
    expect(errorFromBody('', 503, 'Service Unavailable').message).toBe('Service Unavailable');
    expect(errorFromBody('<html>'.repeat(100), 500).message).toBe('HTTP 500');
  });
});

describe('ImpetusApi', () => {
  it('gets the status and the model list', async () => {
    const server = new FakeServer();
    const api = new ImpetusApi(server.fetch);
    expect((await api.status()).state).toBe('ready');
    expect((await api.models()).map(m => m.id)).toEqual([
      'smollm2-135m',
      'minilm',
      'org/remote-model'
    ]);
    expect(server.requests.map(r => `${r.method} ${r.path}`)).toEqual([
      'GET admin/status',
      'GET admin/models'
    ]);
  });

  it("reads the registry's search result and its error", async () => {
    const ok = new ImpetusApi(async () =>
      json({ query: 'q', models: [{ id: 'org/m', downloads: 3 }], error: null })
    );
    expect(await ok.searchHub('q')).toEqual([{ id: 'org/m', downloads: 3 }]);
    const offline = new ImpetusApi(async () =>
      json({ query: 'q', models: [], error: 'the hub cannot be searched' })
    );
    await expect(offline.searchHub('q')).rejects.toThrow('the hub cannot be searched');
  });

  it('accepts a bare array as a list', async () => {
    const api = new ImpetusApi(async () => json([{ id: 'a' }]));
    expect(await api.models()).toEqual([{ id: 'a' }]);
  });

  it('raises ApiError with the server message on failure', async () => {
    const server = new FakeServer();
    const api = new ImpetusApi(server.fetch);
    await expect(api.load('nope')).rejects.toMatchObject({
      status: 404,
      code: 'model_not_found',
      param: 'id'
    });
  });

  it('sends load options as the contract names them', async () => {
    const server = new FakeServer();
    const api = new ImpetusApi(server.fetch);
    const state = await api.load('minilm', { keepAlive: -1, dtype: 'float32' });
    expect(state.keep_alive).toBe(-1);
    const req = server.requests[0];
    expect(req).toMatchObject({
      method: 'POST',
      path: 'admin/models/load',
      body: { id: 'minilm', keep_alive: -1, dtype: 'float32' }
    });
    expect(req.headers['content-type']).toBe('application/json');
    await api.load('minilm');
    expect(server.requests[1].body).toEqual({ id: 'minilm' });
  });

  it('escapes ids in paths and queries', async () => {
    const server = new FakeServer();
    const api = new ImpetusApi(server.fetch);
    await api.searchHub(' smol lm&x ');
    await api.revokeKey('key/1').catch(() => undefined);
    await api.deleteModel('org/model').catch(() => undefined);
    expect(server.requests.map(r => r.path)).toEqual([
      'admin/models/search?q=smol%20lm%26x',
      'admin/keys/key%2F1',
      'admin/models/org/model'
    ]);
  });

  it('streams download progress as it arrives and ends on done', async () => {
    const server = new FakeServer();
    const api = new ImpetusApi(server.fetch);
    const seen: IPullProgress[] = [];
    const done = api.pull('org/remote-model', p => seen.push(p));
    await settle();
    const stream = server.pulls.get('org/remote-model') as PushStream;
    expect(server.requests[0]).toMatchObject({
      method: 'POST',
      path: 'admin/models/pull',
      body: { id: 'org/remote-model', load: false }
    });
    stream.send({ status: 'downloading', bytes_done: 0, bytes_total: 100 });
    await settle();
    expect(seen.map(p => p.bytes_done)).toEqual([0]); // delivered before the stream ends
    stream.raw(': keep-alive\n\n');
    stream.send({ status: 'downloading', bytes_done: 50, bytes_total: 100, speed: 10, eta: 5 });
    stream.send({ status: 'converting', message: 'converting GGUF' });
    stream.send({ status: 'done', bytes_done: 100, bytes_total: 100 });
    const final = await done;
    expect(final.status).toBe('done');
    expect(seen.map(p => p.status)).toEqual(['downloading', 'downloading', 'converting', 'done']);
    expect(stream.cancelled).toBe(true); // the reader let go of the body after `done`
  });

  it('reports a stream that ends mid-download as an error', async () => {
    const server = new FakeServer();
    const api = new ImpetusApi(server.fetch);
    const seen: IPullProgress[] = [];
    const done = api.pull('x', p => seen.push(p));
    await settle();
    const stream = server.pulls.get('x') as PushStream;
    stream.send({ status: 'downloading', bytes_done: 10, bytes_total: 100 });
    stream.close();
    const final = await done;
    expect(final.status).toBe('error');
    expect(final.bytes_done).toBe(10);
    expect(final.message).toMatch(/ended before/);
    expect(seen[seen.length - 1]).toEqual(final);
  });

  it('turns an error event in the stream into an error progress', async () => {
    const server = new FakeServer();
    const api = new ImpetusApi(server.fetch);
    const done = api.pull('x', () => undefined);
    await settle();
    const stream = server.pulls.get('x') as PushStream;
    stream.raw(
      'event: error\ndata: {"error": {"message": "repository not found", "code": "model_not_found"}}\n\n'
    );
    expect(await done).toEqual({ id: 'x', status: 'error', message: 'repository not found' });
  });

  it('fails a download refused before streaming with the server message', async () => {
    const server = new FakeServer();
    server.override = r =>
      r.path === 'admin/models/pull'
        ? json(
            { error: { message: 'already downloading', type: 'x', param: 'id', code: 'conflict' } },
            409
          )
        : undefined;
    const api = new ImpetusApi(server.fetch);
    await expect(api.pull('x', () => undefined)).rejects.toMatchObject({
      status: 409,
      message: 'already downloading'
    });
  });

  it('creates, lists and revokes keys', async () => {
    const server = new FakeServer();
    const api = new ImpetusApi(server.fetch);
    const created = await api.createKey();
    expect(created.key).toBe('imp-secret-1');
    expect((await api.keys()).map(k => k.id)).toEqual([created.id]);
    await api.revokeKey(created.id);
    expect(await api.keys()).toEqual([]);
  });

  it('refuses a key answer without the secret', async () => {
    const api = new ImpetusApi(async () => json({ id: 'k' }, 201));
    await expect(api.createKey()).rejects.toThrow(/did not return a key/);
  });
});

describe('normaliseProgress', () => {
  it('keeps known statuses and drops unknown events', () => {
    expect(normaliseProgress({ status: 'downloading', bytes_done: 1 }, 'm')).toEqual({
      id: 'm',
      status: 'downloading',
      bytes_done: 1
    });
    expect(normaliseProgress({ id: 'org/m', status: 'done' }, 'm')).toEqual({
      id: 'org/m',
      status: 'done'
    });
    expect(normaliseProgress({ status: 'warming' }, 'm')).toBeNull();
    expect(normaliseProgress('x', 'm')).toBeNull();
    expect(normaliseProgress({ message: 'boom' }, 'm', 'error')).toEqual({
      id: 'm',
      status: 'error',
      message: 'boom'
    });
  });
});
