import { describe, expect, it } from 'vitest';

import {
  acceleratorLabel,
  backendLabel,
  blasLabel,
  describeProgress,
  formatBytes,
  formatDuration,
  formatKeepAlive,
  formatParameters,
  formatRate,
  memoryView,
  progressFraction,
  stateView
} from '../src/format';

describe('format', () => {
  it('formats bytes in powers of 1024', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1536)).toBe('1.50 KB');
    expect(formatBytes(15 * 1024 ** 2)).toBe('15.0 MB');
    expect(formatBytes(150 * 1024 ** 3)).toBe('150 GB');
    expect(formatBytes(null)).toBe('—');
    expect(formatBytes(NaN)).toBe('—');
  });

  it('formats durations and keep-alive', () => {
    expect(formatDuration(4.4)).toBe('4 s');
    expect(formatDuration(185)).toBe('3 min 05 s');
    expect(formatDuration(7800)).toBe('2 h 10 min');
    expect(formatKeepAlive(-1)).toBe('forever');
    expect(formatKeepAlive(null)).toBe('server default');
    expect(formatKeepAlive(300)).toBe('5 min 00 s');
  });

  it('formats rates', () => {
    expect(formatRate(0)).toBe('0.00');
    expect(formatRate(12.345)).toBe('12.3');
    expect(formatRate(2934.2)).toBe('2934');
  });

  it('describes download progress', () => {
    const p = {
      status: 'downloading' as const,
      bytes_done: 5 * 1024 ** 2,
      bytes_total: 20 * 1024 ** 2,
      speed: 1024 ** 2,
      eta: 15
    };
    expect(describeProgress(p)).toBe('5.00 MB / 20.0 MB · 1.00 MB/s · 15 s left');
    expect(progressFraction(p)).toBe(0.25);
    expect(progressFraction({ status: 'downloading', bytes_done: 5 })).toBeNull();
    expect(progressFraction({ status: 'done' })).toBe(1);
    expect(describeProgress({ status: 'converting' })).toBe('converting…');
    expect(
      describeProgress({ status: 'done', bytes_total: 2048, message: 'ready in /long/path' })
    ).toBe('downloaded · 2.00 KB');
    expect(describeProgress({ status: 'error', message: 'disk full' })).toBe('disk full');
    expect(describeProgress({ status: 'downloading', bytes_done: 2048 })).toBe('2.00 KB');
    expect(
      describeProgress({
        status: 'downloading',
        bytes_done: 1,
        bytes_total: 2,
        file: 'model.safetensors'
      })
    ).toBe('1 B / 2 B · model.safetensors');
  });

  it('formats parameter counts', () => {
    expect(formatParameters(134_515_008)).toBe('135M params');
    expect(formatParameters(8_030_000_000)).toBe('8.0B params');
    expect(formatParameters(null)).toBeNull();
  });

  it('maps engine states and backends', () => {
    expect(stateView('ready')).toEqual({ label: 'ready', tone: 'ok' });
    expect(stateView('restarting').tone).toBe('busy');
    expect(stateView('failed')).toEqual({ label: 'error', tone: 'bad' });
    expect(stateView('stopped')).toEqual({ label: 'not started', tone: 'idle' });
    expect(stateView('unreachable').tone).toBe('bad');
    expect(['cpu', 'metal', 'cuda', 'rocm', undefined].map(backendLabel)).toEqual([
      'CPU',
      'Metal',
      'CUDA',
      'rocm',
      '—'
    ]);
  });

  it('names the BLAS family', () => {
    expect(blasLabel('/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so')).toBe(
      'OpenBLAS'
    );
    expect(blasLabel('libblis.so.4')).toBe('BLIS');
    expect(blasLabel('')).toBe('');
    expect(blasLabel('/opt/libfoo.so')).toBe('libfoo.so');
  });

  it('shows memory against the budget', () => {
    expect(
      memoryView({ state: 'ready', memory_used: 512 * 1024 ** 2, memory_budget: 2 * 1024 ** 3 })
    ).toEqual({
      text: '512 MB / 2.00 GB',
      fraction: 0.25
    });
    expect(memoryView({ state: 'ready', memory_used: 3, memory_budget: 0 }).fraction).toBeNull();
    expect(memoryView({ state: 'ready', memory_used: 10, memory_budget: 5 }).fraction).toBe(1);
  });
});

describe('acceleratorLabel', () => {
  it('names a CPU reading as the engine CPU, never as a GPU', () => {
    const status = {
      state: 'ready' as const,
      accelerator: {
        kind: 'cpu',
        source: 'psutil',
        name: 'CPU',
        what: 'engine process CPU',
        utilization_percent: 35.4
      }
    };
    expect(acceleratorLabel(status)).toBe('engine CPU 35%');
  });
  it('shows NVML figures on NVIDIA', () => {
    const status = {
      state: 'ready' as const,
      accelerator: {
        kind: 'cuda',
        source: 'nvml',
        name: 'NVIDIA H100',
        what: 'GPU busy time',
        utilization_percent: 73,
        memory_used_bytes: 2 * 1024 ** 3,
        memory_total_bytes: 80 * 1024 ** 3,
        power_watts: 312.4,
        temperature_celsius: 61
      }
    };
    expect(acceleratorLabel(status)).toBe('GPU 73% · 2.00 GB / 80.0 GB · 312 W · 61 °C');
  });
  it('is null when the server reports no accelerator', () => {
    expect(acceleratorLabel({ state: 'ready' })).toBeNull();
  });
});
