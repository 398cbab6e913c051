// A time-series chart (uPlot) of a report series: one line per key, slots on the x axis.
// Keyboard and screen-reader users get the same numbers as a table (the figure's caption and a
// <details> table); the canvas is decoration for them.
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export interface Series {
  t: number[];
  values: Record<string, number[]>;
}

const COLORS = ['#1f6feb', '#d1242f', '#1a7f37', '#9a6700', '#8250df', '#bc4c00', '#57606a'];

export function Chart({ title, series, id }: { title: string; series: Series; id: string }) {
  const box = useRef<HTMLDivElement>(null);
  const keys = Object.keys(series.values);
  useEffect(() => {
    if (!box.current) return;
    const width = Math.max(320, Math.min(900, box.current.clientWidth || 640));
    const plot = new uPlot(
      {
        width,
        height: 220,
        title,
        scales: { x: { time: true } },
        axes: [{}, { label: 'count' }],
        series: [
          {},
          ...keys.map((k, i) => ({
            label: k,
            stroke: COLORS[i % COLORS.length],
            width: 2,
            points: { show: series.t.length < 60 },
          })),
        ],
      },
      [series.t.map((t) => t / 1000), ...keys.map((k) => series.values[k])],
      box.current,
    );
    return () => plot.destroy();
  }, [series, title]);
  const totals = keys.map((k) => [k, series.values[k].reduce((a, b) => a + b, 0)] as const);
  return (
    <figure class="chart" data-chart={id}>
      <div ref={box} class="chart-canvas" aria-hidden="true" />
      <figcaption>
        {title}: {totals.map(([k, n]) => `${k} ${n}`).join(', ') || 'nothing counted in this range'}
      </figcaption>
    </figure>
  );
}
