import { describe, expect, it } from 'vitest';

import { IServerSentEvent, SseParser, readEvents } from '../src/sse';

function parseAll(text: string): IServerSentEvent[] {
  const p = new SseParser();
  return [...p.push(text), ...p.finish()];
}

function streamOf(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      chunks.forEach(c => controller.enqueue(c));
      controller.close();
    }
  });
}

async function collect(body: ReadableStream<Uint8Array>): Promise<IServerSentEvent[]> {
  const out: IServerSentEvent[] = [];
  for await (const e of readEvents(body)) {
    out.push(e);
  }
  return out;
}

describe('SseParser', () => {
  it('reads data events and names', () => {
    const events = parseAll('data: {"a":1}\n\nevent: progress\ndata: two\n\n');
    expect(events).toEqual([
      { event: 'message', data: '{"a":1}', id: null },
      { event: 'progress', data: 'two', id: null }
    ]);
  });

  it('joins multi-line data, skips comments and keeps the last id', () => {
    const events = parseAll(': keep-alive\nid: 7\ndata: first\ndata: second\nretry: 10\n\n');
    expect(events).toEqual([{ event: 'message', data: 'first\nsecond', id: '7' }]);
  });

  it('accepts CRLF and CR line ends, and a field without a space after the colon', () => {
    expect(parseAll('data:x\r\n\r\ndata: y\r\rdata: z\n\n').map(e => e.data)).toEqual([
      'x',
      'y',
      'z'
    ]);
  });

  it('gives the same events however the text is split', () => {
    const text =
      'data: {"status":"downloading"}\r\n\r\nevent: error\ndata: {"x":"é"}\n\n: c\n\ndata: end\n\n';
    const whole = parseAll(text);
    for (let cut = 0; cut <= text.length; cut++) {
      const p = new SseParser();
      const split = [...p.push(text.slice(0, cut)), ...p.push(text.slice(cut)), ...p.finish()];
      expect(split).toEqual(whole);
    }
    expect(whole.map(e => e.event)).toEqual(['message', 'error', 'message']);
  });

  it('drops an event the stream did not close with a blank line', () => {
    expect(parseAll('data: complete\n\ndata: cut off')).toEqual([
      { event: 'message', data: 'complete', id: null }
    ]);
  });

  it('ignores blank-line runs that carry no data', () => {
    expect(parseAll('\n\n\nevent: ping\n\n')).toEqual([]);
  });
});

describe('readEvents', () => {
  it('decodes UTF-8 split across chunks', async () => {
    const bytes = new TextEncoder().encode('data: {"message":"naïve ✓"}\n\n');
    // Cut inside the 3-byte check mark and inside the 2-byte ï.
    const cuts = [5, 18, bytes.length - 6, bytes.length - 5];
    const chunks: Uint8Array[] = [];
    let start = 0;
    for (const c of cuts) {
      chunks.push(bytes.slice(start, c));
      start = c;
    }
    chunks.push(bytes.slice(start));
    const events = await collect(streamOf(chunks));
    expect(JSON.parse(events[0].data)).toEqual({ message: 'naïve ✓' });
  });

  it('yields events before the stream ends', async () => {
    let controller!: ReadableStreamDefaultController<Uint8Array>;
    const body = new ReadableStream<Uint8Array>({ start: c => void (controller = c) });
    const it = readEvents(body)[Symbol.asyncIterator]();
    controller.enqueue(new TextEncoder().encode('data: 1\n\n'));
    const first = await it.next();
    expect(first.value?.data).toBe('1');
    controller.enqueue(new TextEncoder().encode('data: 2\n\n'));
    controller.close();
    expect((await it.next()).value?.data).toBe('2');
    expect((await it.next()).done).toBe(true);
  });

  it('cancels the body when the reader stops early', async () => {
    let cancelled = false;
    const body = new ReadableStream<Uint8Array>({
      start: c => c.enqueue(new TextEncoder().encode('data: a\n\ndata: b\n\n')),
      cancel: () => void (cancelled = true)
    });
    for await (const e of readEvents(body)) {
      expect(e.data).toBe('a');
      break;
    }
    expect(cancelled).toBe(true);
  });
});
