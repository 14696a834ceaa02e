// Preloaded into Portkey's gateway by bench/compare.sh (node -r): gives requests that arrive
// without x-portkey-provider the headers that route them to the loopback mock, because
// bench/stream_load (the streaming client) cannot send custom headers. wrk sends the real headers
// itself (-H), so the non-streamed comparison does not depend on this. The cost is two array
// pushes per request, before Portkey parses anything.
//   PORTKEY_BENCH_HOST=http://127.0.0.1:PORT/v1 node -r default-headers.cjs start-server.js ...
'use strict';
const http = require('http');
const { syncBuiltinESMExports } = require('module');

const host = process.env.PORTKEY_BENCH_HOST;
if (host) {
  const createServer = http.createServer;
  http.createServer = function (options, listener) {
    if (typeof options === 'function') [options, listener] = [{}, options];
    const wrapped = (req, res) => {
      // rawHeaders, not req.headers: reading req.headers would cache it before the push.
      const raw = req.rawHeaders;
      let has = false;
      for (let i = 0; i < raw.length; i += 2) {
        if (raw[i].toLowerCase() === 'x-portkey-provider') { has = true; break; }
      }
      if (!has) raw.push('x-portkey-provider', 'openai', 'x-portkey-custom-host', host);
      return listener(req, res);
    };
    return createServer.call(this, options, wrapped);
  };
  // start-server.js does `import { createServer } from "http"`: update the ESM named export too.
  syncBuiltinESMExports();
}
