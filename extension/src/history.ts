/**
 * The last minute of engine activity, sampled from `admin/status` once a second, and the
 * SVG geometry of its sparklines. Pure logic, unit-tested.
 */
import type { IEngineStatus } from './types';

export interface ISample {
  /** Milliseconds (Date.now()) when the sample was taken. */
  t: number;
  tps: number;
  running: number;
  waiting: number;
}

export class ActivityHistory {
  private samples: ISample[] = [];

  constructor(readonly capacity = 60) {}

  get length(): number {
    return this.samples.length;
  }

  get latest(): ISample | null {
    return this.samples.length ? this.samples[this.samples.length - 1] : null;
  }

  /** Oldest first. */
  values(): readonly ISample[] {
    return this.samples;
  }

  add(sample: ISample): void {
    this.samples.push(sample);
    if (this.samples.length > this.capacity) {
      this.samples.splice(0, this.samples.length - this.capacity);
    }
  }

  addStatus(status: Partial<IEngineStatus>, t: number = Date.now()): ISample {
    const stats = status.stats ?? {};
    const sample: ISample = {
      t,
      tps: finite(stats.decode_tps_recent),
      running: finite(stats.running),
      waiting: finite(stats.waiting)
    };
    this.add(sample);
    return sample;
  }

  /** Peak tokens/s over the window (the sparkline's scale). */
  peakTps(): number {
    return this.samples.reduce((m, s) => Math.max(m, s.tps), 0);
  }

  clear(): void {
    this.samples = [];
  }
}

function finite(value: number | undefined): number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : 0;
}

/**
 * Points of a polyline for `values` in a width x height box, newest at the right edge; the
 * y scale runs from 0 to `max` (at least 1 so an idle engine draws a flat line at the bottom).
 * `capacity` slots span the width, so the line grows in from the right as samples arrive.
 */
export function sparklinePoints(
  values: readonly number[],
  width: number,
  height: number,
  capacity: number,
  max?: number
): string {
  if (values.length === 0) {
    return '';
  }
  const top = Math.max(1, max ?? Math.max(...values));
  const slots = Math.max(2, capacity);
  const step = width / (slots - 1);
  const pad = 1; // keep the stroke inside the box
  const offset = slots - values.length;
  return values
    .map((v, i) => {
      const x = (offset + i) * step;
      const y = height - pad - (Math.max(0, Math.min(v, top)) / top) * (height - 2 * pad);
      return `${round(x)},${round(y)}`;
    })
    .join(' ');
}

/** The same line closed down to the baseline, for a filled area under it. */
export function sparklineArea(points: string, height: number): string {
  if (!points) {
    return '';
  }
  const first = points.split(' ')[0].split(',')[0];
  const last = points.split(' ').slice(-1)[0].split(',')[0];
  return `${first},${height} ${points} ${last},${height}`;
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}
