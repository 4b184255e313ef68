import { describe, expect, it } from 'vitest';

import { ActivityHistory, sparklineArea, sparklinePoints } from '../src/history';

describe('ActivityHistory', () => {
  it('keeps the last `capacity` samples from status', () => {
    const h = new ActivityHistory(3);
    for (let i = 1; i <= 5; i++) {
      h.addStatus(
        { state: 'ready', stats: { decode_tps_recent: i * 10, running: i, waiting: 0 } },
        i
      );
    }
    expect(h.values().map(s => s.tps)).toEqual([30, 40, 50]);
    expect(h.latest).toEqual({ t: 5, tps: 50, running: 5, waiting: 0 });
    expect(h.peakTps()).toBe(50);
  });

  it('reads missing or broken stats as zero', () => {
    const h = new ActivityHistory();
    h.addStatus({ state: 'starting' }, 0);
    h.addStatus({ state: 'ready', stats: { decode_tps_recent: NaN, running: -1 } }, 1);
    expect(h.values().map(s => [s.tps, s.running, s.waiting])).toEqual([
      [0, 0, 0],
      [0, 0, 0]
    ]);
  });
});

describe('sparkline', () => {
  it('places the newest value at the right edge and scales to the max', () => {
    const pts = sparklinePoints([0, 5, 10], 100, 12, 3).split(' ');
    expect(pts).toEqual(['0,11', '50,6', '100,1']);
  });

  it('grows in from the right while the window fills', () => {
    const pts = sparklinePoints([10], 100, 12, 5, 10);
    expect(pts).toBe('100,1');
  });

  it('draws an idle engine as a flat line at the bottom', () => {
    expect(sparklinePoints([0, 0], 10, 12, 2)).toBe('0,11 10,11');
    expect(sparklinePoints([], 10, 12, 2)).toBe('');
  });

  it('clamps values above an explicit max', () => {
    expect(sparklinePoints([20], 10, 12, 2, 10)).toBe('10,1');
  });

  it('closes the area to the baseline', () => {
    expect(sparklineArea('0,11 50,6 100,1', 12)).toBe('0,12 0,11 50,6 100,1 100,12');
    expect(sparklineArea('', 12)).toBe('');
  });
});
