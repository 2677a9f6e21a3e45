// The workbench page: wiring only. The image, the wasm engine and every byte of storage
// live in the worker (worker.js), reached through core/bridge.js; core/ holds what the
// panels share, panels/ one module per view (and the side panel). Imports go one way:
// main -> panels -> core.

import { bridge } from './core/bridge.js';
import { showBusy } from './core/dom.js';
import { go, initRouter } from './core/router.js';
import { on } from './core/state.js';
import { initApp } from './panels/app.js';
import { initChain, runChainExport } from './panels/chain.js';
import { initCheck, runCheck } from './panels/check.js';
import { initCreate } from './panels/create.js';
import { initEdit, makeCopy } from './panels/edit.js';
import { initEditRun } from './panels/edit-run.js';
import { initFsCompact } from './panels/fs-compact.js';
import { initExport, runExport } from './panels/export.js';
import { initFiles } from './panels/files.js';
import { initHeader } from './panels/header.js';
import { initHex } from './panels/hex.js';
import { initMap } from './panels/map.js';
import { initOpen } from './panels/open.js';
import { initOverview } from './panels/overview.js';
import { initRepair, previewRepairOfOpen } from './panels/repair.js';

on('busy', showBusy);
on('image', ({ current }) => document.body.classList.toggle('has-image', !!current));
initRouter('#view-tabs');
bridge.start();

initApp();
initOpen();
initOverview({
  check: () => runCheck(),
  repair: () => { go('edit'); previewRepairOfOpen(); },
  'export-raw': () => { go('export'); runExport('raw'); },
  'save-image': () => { go('export'); runExport('image'); },
  'edit-copy': () => { go('edit'); makeCopy(); },
  edit: () => go('edit'),
  chain: () => go('chain'),
  'chain-export-raw': () => { go('chain'); runChainExport('raw'); },
  'chain-export-vdi': () => { go('chain'); runChainExport('vdi'); },
  files: () => go('files'),
  header: () => go('header'),
  map: () => go('map'),
});
initHeader();
initMap();
initCheck();
initExport();
initEditRun();
initEdit();
initFsCompact();
initRepair();
initCreate();
initChain();
initHex();
initFiles();
