/**
 * Errors of the impetus HTTP API, read from any of the shapes a request can fail with:
 * OpenAI's `{"error": {"message", "type", "param", "code"}}` (every impetus endpoint),
 * Jupyter's own `{"message", "reason"}` (auth and XSRF failures before impetus sees the request),
 * or no JSON at all (a proxy, a dropped connection).
 */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string | null;
  readonly type: string | null;
  readonly param: string | null;

  constructor(
    message: string,
    options: {
      status?: number;
      code?: string | null;
      type?: string | null;
      param?: string | null;
    } = {}
  ) {
    super(message);
    this.name = 'ApiError';
    this.status = options.status ?? 0;
    this.code = options.code ?? null;
    this.type = options.type ?? null;
    this.param = options.param ?? null;
  }
}

function asString(value: unknown): string | null {
  return typeof value === 'string' && value.length > 0 ? value : null;
}

/** Build an ApiError from a parsed body (whatever its shape) and the HTTP status. */
export function errorFromBody(body: unknown, status: number, statusText = ''): ApiError {
  if (body && typeof body === 'object') {
    const obj = body as Record<string, unknown>;
    const inner = obj.error;
    if (inner && typeof inner === 'object') {
      const err = inner as Record<string, unknown>;
      return new ApiError(asString(err.message) ?? `HTTP ${status}`, {
        status,
        code: asString(err.code),
        type: asString(err.type),
        param: asString(err.param)
      });
    }
    if (typeof inner === 'string') {
      return new ApiError(inner, { status });
    }
    const message = asString(obj.message) ?? asString(obj.reason);
    if (message) {
      return new ApiError(message, { status, code: asString(obj.reason) });
    }
  }
  const text = typeof body === 'string' ? body.trim() : '';
  const fallback = text && text.length < 300 ? text : statusText || `HTTP ${status}`;
  return new ApiError(fallback, { status });
}

/** Read the error out of a failed response. Never throws. */
export async function errorFromResponse(response: Response): Promise<ApiError> {
  let text = '';
  try {
    text = await response.text();
  } catch {
    // The body is gone (aborted stream); the status line is all there is.
  }
  let body: unknown = text;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      // Not JSON: keep the text.
    }
  }
  return errorFromBody(body, response.status, response.statusText);
}

/** A human message for anything caught in a handler. */
export function describeError(err: unknown): string {
  if (err instanceof ApiError) {
    return err.status ? `${err.message} (HTTP ${err.status})` : err.message;
  }
  if (err instanceof Error) {
    return err.message;
  }
  return String(err);
}
