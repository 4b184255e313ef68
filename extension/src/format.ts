/** Text for numbers the sidebar shows. Pure functions, unit-tested. */
import type { EngineState, IEngineStatus, IPullProgress } from './types';

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB'];

/** 1536 -> "1.5 KB" (powers of 1024, as memory is counted); null/NaN -> "—". */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes) || bytes < 0) {
    return '—';
  }
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

/** Seconds -> "45 s", "3 min 05 s", "2 h 10 min". */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) {
    return '—';
  }
  const s = Math.round(seconds);
  if (s < 60) {
    return `${s} s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  }
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

/** Keep-alive seconds as the load menu shows them; negative means never unloaded. */
export function formatKeepAlive(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) {
    return 'server default';
  }
  if (seconds < 0) {
    return 'forever';
  }
  if (seconds === 0) {
    return 'unload when idle';
  }
  return formatDuration(seconds);
}

/** Tokens per second with sensible precision. */
export function formatRate(tps: number | null | undefined): string {
  if (tps === null || tps === undefined || !Number.isFinite(tps)) {
    return '—';
  }
  return tps >= 100 ? tps.toFixed(0) : tps >= 10 ? tps.toFixed(1) : tps.toFixed(2);
}

/** 0..1 fraction of a download, or null when the total is unknown. */
export function progressFraction(p: Omit<IPullProgress, 'id'>): number | null {
  if (p.status === 'done') {
    return 1;
  }
  const total = p.bytes_total ?? 0;
  if (!total || total <= 0) {
    return null;
  }
  return Math.max(0, Math.min(1, (p.bytes_done ?? 0) / total));
}

/** "12.0 MB / 48.0 MB · 3.2 MB/s · 11 s left" and the like. */
export function describeProgress(p: Omit<IPullProgress, 'id'>): string {
  switch (p.status) {
    case 'done':
      // The server's message names the folder: a tooltip, not the line.
      return p.bytes_total ? `downloaded · ${formatBytes(p.bytes_total)}` : 'downloaded';
    case 'cancelled':
      return p.message || 'cancelled';
    case 'error':
      return p.message || 'download failed';
    case 'converting':
      return p.message || 'converting…';
    default: {
      const parts: string[] = [];
      if (p.message) {
        parts.push(p.message);
      }
      const done = formatBytes(p.bytes_done ?? 0);
      parts.push(p.bytes_total ? `${done} / ${formatBytes(p.bytes_total)}` : done);
      if (p.speed && p.speed > 0) {
        parts.push(`${formatBytes(p.speed)}/s`);
      }
      if (p.eta !== null && p.eta !== undefined && p.eta >= 0 && p.bytes_total) {
        parts.push(`${formatDuration(p.eta)} left`);
      }
      if (p.file) {
        parts.push(p.file);
      }
      return parts.join(' · ');
    }
  }
}

/** The state word shown, and its colour class: ok / busy / bad. */
export function stateView(state: EngineState): {
  label: string;
  tone: 'ok' | 'busy' | 'bad' | 'idle';
} {
  switch (state) {
    case 'ready':
      return { label: 'ready', tone: 'ok' };
    case 'starting':
      return { label: 'starting', tone: 'busy' };
    case 'restarting':
      return { label: 'restarting', tone: 'busy' };
    case 'stopped':
      // inside Jupyter the engine starts on first use: not started is the normal idle state
      return { label: 'not started', tone: 'idle' };
    case 'failed':
      return { label: 'error', tone: 'bad' };
    default:
      return { label: 'unreachable', tone: 'bad' };
  }
}

/** "cpu" -> "CPU", "metal" -> "Metal", "cuda" -> "CUDA"; unknown names pass through. */
export function backendLabel(backend: string | null | undefined): string {
  switch ((backend ?? '').toLowerCase()) {
    case 'cpu':
      return 'CPU';
    case 'metal':
    case 'gpu':
      return 'Metal';
    case 'cuda':
      return 'CUDA';
    case '':
      return '—';
    default:
      return backend as string;
  }
}

/** The BLAS library the engine loaded, by family; "" when MLX's own reference BLAS is used. */
export function blasLabel(blas: string | null | undefined): string {
  if (!blas) {
    return '';
  }
  const name = blas.split('/').pop() ?? blas;
  if (/openblas/i.test(name)) {
    return 'OpenBLAS';
  }
  if (/blis/i.test(name)) {
    return 'BLIS';
  }
  if (/mkl/i.test(name)) {
    return 'MKL';
  }
  return name;
}

/**
 * The accelerator line: "GPU 73% · 41.2 GB / 79.6 GB · 312 W · 61 °C" on NVIDIA, "engine CPU 35%"
 * on a CPU backend: a CPU figure is never shown as a GPU's. null when the server reports none.
 */
export function acceleratorLabel(status: Partial<IEngineStatus>): string | null {
  const acc = status.accelerator;
  if (!acc) {
    return null;
  }
  const parts: string[] = [];
  const util = acc.utilization_percent;
  const label = acc.kind === 'cpu' ? 'engine CPU' : 'GPU';
  parts.push(util === null || util === undefined ? `${label} —` : `${label} ${Math.round(util)}%`);
  if (acc.kind !== 'cpu' && acc.memory_total_bytes) {
    parts.push(
      `${formatBytes(acc.memory_used_bytes ?? 0)} / ${formatBytes(acc.memory_total_bytes)}`
    );
  }
  if (acc.power_watts !== null && acc.power_watts !== undefined) {
    parts.push(`${Math.round(acc.power_watts)} W`);
  }
  if (acc.temperature_celsius !== null && acc.temperature_celsius !== undefined) {
    parts.push(`${Math.round(acc.temperature_celsius)} °C`);
  }
  return parts.join(' · ');
}

/** Memory in use against the budget: text and a 0..1 fraction for the bar. */
export function memoryView(status: Partial<IEngineStatus>): {
  text: string;
  fraction: number | null;
} {
  const used = status.memory_used ?? 0;
  const budget = status.memory_budget ?? 0;
  if (!budget) {
    return { text: formatBytes(used), fraction: null };
  }
  return {
    text: `${formatBytes(used)} / ${formatBytes(budget)}`,
    fraction: Math.max(0, Math.min(1, used / budget))
  };
}

/** A unix time (seconds) or ISO string -> local date and time; "—" when absent. */
export function formatTimestamp(value: number | string | null | undefined): string {
  if (value === null || value === undefined || value === '') {
    return '—';
  }
  const date = typeof value === 'number' ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) {
    return String(value);
  }
  return date.toLocaleString();
}

/** 135_000_000 -> "135M params". */
export function formatParameters(n: number | null | undefined): string | null {
  if (!n || !Number.isFinite(n) || n <= 0) {
    return null;
  }
  const units: Array<[number, string]> = [
    [1e12, 'T'],
    [1e9, 'B'],
    [1e6, 'M'],
    [1e3, 'K']
  ];
  for (const [size, unit] of units) {
    if (n >= size) {
      const v = n / size;
      return `${v >= 10 ? v.toFixed(0) : v.toFixed(1)}${unit} params`;
    }
  }
  return `${n} params`;
}
