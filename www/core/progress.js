// A progress row (#<prefix>-progress-row with a <progress> and a text), updated at most
// once a frame.

import { $ } from './dom.js';
import { duration, human, rate } from './format.js';

export function progressUi(prefix) {
  const row = $(`#${prefix}-progress-row`);
  const bar = $(`#${prefix}-progress`);
  const text = $(`#${prefix}-progress-text`);
  const t0 = performance.now();
  let frame = 0;
  let last = null;
  row.hidden = false;
  bar.value = 0;
  text.textContent = 'starting…';
  return {
    update(p, unit = 'bytes') {
      last = { ...p, unit };
      if (frame) return;
      frame = requestAnimationFrame(() => {
        frame = 0;
        const { done, total } = last;
        bar.max = 1;
        bar.value = total ? done / total : 1;
        const ms = performance.now() - t0;
        if (last.unit === 'bytes') {
          const speed = ms > 200 ? ` · ${rate(done, ms)}` : '';
          const eta = done > 0 && ms > 500 ? ` · ${duration((ms / done) * (total - done))} left` : '';
          text.textContent = `${human(done)} of ${human(total)}${last.ofData ? ' of data' : ''}${speed}${eta}`;
        } else {
          text.textContent = `${done} of ${total} ${last.unit}`;
        }
      });
    },
    done() {
      cancelAnimationFrame(frame);
      row.hidden = true;
    },
  };
}
