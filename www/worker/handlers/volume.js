// Handlers: what is inside the disk (its bytes for the Hex view).

import { disk } from '../engine.js';

export const volumeHandlers = {
  hexRead: ({ offset, len, chain }) => disk.read(!!chain, offset, len),
};
