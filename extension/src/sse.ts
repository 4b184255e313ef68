/**
 * A server-sent-events reader for fetch responses.
 *
 * EventSource cannot POST nor send JupyterLab's token / XSRF headers, so the sidebar reads the
 * body of a `ServerConnection.makeRequest` response itself. The parser follows the WHATWG rules
 * that matter here: `\n`, `\r\n` or `\r` line ends, multi-line `data:`, `event:` and `id:` fields,
 * comments, and chunk boundaries anywhere (inside a line or a UTF-8 sequence).
 */

export interface IServerSentEvent {
  /** `event:` field; "message" when absent. */
  event: string;
  /** The `data:` lines joined with "\n". */
  data: string;
  id: string | null;
}

/** Incremental parser: feed text chunks, get the events completed so far. */
export class SseParser {
  private buffer = '';
  private dataLines: string[] = [];
  private eventName = '';
  private lastId: string | null = null;
  private sawField = false;

  /** Feed decoded text; returns every event this chunk completed. */
  push(chunk: string): IServerSentEvent[] {
    this.buffer += chunk;
    const events: IServerSentEvent[] = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (!match) {
        break;
      }
      // A lone "\r" at the end of the buffer may be the first half of "\r\n": wait for more.
      if (match[0] === '\r' && match.index === this.buffer.length - 1) {
        break;
      }
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      const event = this.line(line);
      if (event) {
        events.push(event);
      }
    }
    return events;
  }

  /** End of stream: an event not closed by a blank line is dropped, as the spec says. */
  finish(): IServerSentEvent[] {
    const rest = this.buffer.replace(/\r$/, '');
    this.buffer = '';
    if (rest) {
      this.line(rest);
    }
    this.reset();
    return [];
  }

  private line(line: string): IServerSentEvent | null {
    if (line === '') {
      return this.dispatch();
    }
    if (line.startsWith(':')) {
      return null; // comment / keep-alive
    }
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) {
      value = value.slice(1);
    }
    switch (field) {
      case 'data':
        this.dataLines.push(value);
        this.sawField = true;
        break;
      case 'event':
        this.eventName = value;
        this.sawField = true;
        break;
      case 'id':
        if (!value.includes('\0')) {
          this.lastId = value;
        }
        break;
      default:
        // `retry` and unknown fields mean nothing to a one-shot fetch.
        break;
    }
    return null;
  }

  private dispatch(): IServerSentEvent | null {
    if (!this.sawField || this.dataLines.length === 0) {
      this.reset();
      return null;
    }
    const event: IServerSentEvent = {
      event: this.eventName || 'message',
      data: this.dataLines.join('\n'),
      id: this.lastId
    };
    this.reset();
    return event;
  }

  private reset(): void {
    this.dataLines = [];
    this.eventName = '';
    this.sawField = false;
  }
}

/**
 * Yield the events of a response body as they arrive. Aborting `signal` ends the iteration
 * (whatever the transport does with the signal itself).
 */
export async function* readEvents(
  body: ReadableStream<Uint8Array>,
  signal?: AbortSignal
): AsyncGenerator<IServerSentEvent, void, undefined> {
  const reader = body.getReader();
  const decoder = new TextDecoder('utf-8');
  const parser = new SseParser();
  const onAbort = (): void => void reader.cancel().catch(() => undefined);
  signal?.addEventListener('abort', onAbort);
  try {
    if (signal?.aborted) {
      return;
    }
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        break;
      }
      for (const event of parser.push(decoder.decode(value, { stream: true }))) {
        yield event;
      }
    }
    for (const event of parser.push(decoder.decode())) {
      yield event;
    }
    parser.finish();
  } finally {
    signal?.removeEventListener('abort', onAbort);
    // Stops the download of the rest of the body when the consumer breaks out early.
    reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}
