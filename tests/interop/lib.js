'use strict';
// Shared plumbing for cometd-server.js and faye-server.js: bearer auth in
// front of the Bayeux endpoint, the /control/ API, stats bookkeeping and the
// process lifecycle the Rust tests rely on. Only node built-ins are used.

const http = require('http');

const MOUNT = '/cometd/62.0';
const TOKEN = process.env.INTEROP_TOKEN || 'test-token';
// 0 would mean "never hold" to CometD but "60 s" to Faye, so it is not allowed.
const TIMEOUT_MS = intEnv('INTEROP_TIMEOUT_MS', 10000) || 10000;
// CometD's session expiry (maxInterval) after a connect reply; 0 keeps the server's 10 s. Faye
// has no such option: its sessions expire 2 x TIMEOUT_MS after a connect arrived.
const MAX_INTERVAL_MS = intEnv('INTEROP_MAX_INTERVAL_MS', 0);
const DEBUG = !!process.env.INTEROP_DEBUG;

function intEnv(name, dft) {
    const v = parseInt(process.env[name] || '', 10);
    return Number.isFinite(v) && v >= 0 ? v : dft;
}

// stdout carries exactly one line (the port); everything else goes to stderr.
function log(...args) {
    console.error(`[interop ${new Date().toISOString()}]`, ...args);
}

// Shaped like a Salesforce platform event as received over CometD.
function makeEventData(seq, pad) {
    const payload = {seq: seq, CreatedDate: new Date().toISOString()};
    if (pad) {
        // Event size for the side-by-side benchmark (benches/side_by_side).
        payload.Text__c = pad;
    }
    return {schema: 'interop', payload: payload, event: {replayId: seq}};
}

function isMeta(channel) {
    return typeof channel === 'string' && channel.startsWith('/meta/');
}

function isService(channel) {
    return typeof channel === 'string' && channel.startsWith('/service/');
}

function newStats() {
    return {
        handshakes: 0, connects: 0, subscribes: 0, unsubscribes: 0,
        disconnects: 0, publishes: 0,
        // Client publishes (non-meta, non-service), in arrival order.
        published: []
    };
}

const META_COUNTERS = {
    '/meta/handshake': 'handshakes',
    '/meta/connect': 'connects',
    '/meta/subscribe': 'subscribes',
    '/meta/unsubscribe': 'unsubscribes',
    '/meta/disconnect': 'disconnects'
};

// Counts one message received from a client over HTTP.
function countIncoming(stats, message) {
    if (!message || typeof message !== 'object') {
        return;
    }
    const key = META_COUNTERS[message.channel];
    if (key) {
        stats[key]++;
    } else if (!isMeta(message.channel)) {
        stats.publishes++;
    }
}

function sendJson(res, status, body) {
    const text = JSON.stringify(body);
    res.writeHead(status, {
        'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(text)
    });
    res.end(text);
}

function authorized(req) {
    return req.headers['authorization'] === 'Bearer ' + TOKEN;
}

/**
 * Starts the HTTP server.
 *
 * impl = {
 *   name,                          // for logs
 *   handleBayeux(req, res),        // called only for authorized requests under MOUNT
 *   publish(channel, dataArray),   // synchronous hand-off of one chunk to the Bayeux server
 *   expire() -> number,            // invalidates all sessions, returns how many
 *   sessionCount() -> number,
 *   subscriptions() -> {channel: count},
 *   stats                          // object from newStats()
 * }
 */
function start(impl) {
    const server = http.createServer((req, res) => {
        const url = new URL(req.url, 'http://127.0.0.1');
        const path = url.pathname;
        if (path === MOUNT || path.startsWith(MOUNT + '/')) {
            if (!authorized(req)) {
                // Drain the body so the keep-alive connection stays usable.
                req.resume();
                sendJson(res, 401, {error: 'unauthorized', message: 'missing or invalid bearer token'});
                return;
            }
            impl.handleBayeux(req, res);
        } else if (path.startsWith('/control/')) {
            req.resume();
            req.on('end', () => control(impl, req, res, url));
        } else {
            req.resume();
            sendJson(res, 404, {error: 'not found'});
        }
    });
    // Long polls must never be cut by node's own timers.
    server.requestTimeout = 0;
    server.headersTimeout = 0;
    server.timeout = 0;
    // Above the client's 30 s pool idle timeout: otherwise a connection idle for 20-30 s (a
    // loaded machine) can be reused by the client just as the server closes it, and the request
    // on it (a publish, which is not retried) fails with a reset.
    server.keepAliveTimeout = Math.max(60000, TIMEOUT_MS * 2);

    server.on('error', e => {
        log('server error', e);
        process.exit(1);
    });
    server.listen(0, '127.0.0.1', () => {
        const port = server.address().port;
        // process.stdout is synchronous for pipes and files on Linux, so the
        // line is flushed before anything else can happen.
        process.stdout.write(JSON.stringify({port: port}) + '\n');
        log(`${impl.name} listening on http://127.0.0.1:${port}${MOUNT} (timeout ${TIMEOUT_MS} ms)`);
    });

    const exit = why => {
        log('exiting:', why);
        process.exit(0);
    };
    process.on('SIGTERM', () => exit('SIGTERM'));
    process.on('SIGINT', () => exit('SIGINT'));
    // The Rust test owns our stdin; its closing means the test is over.
    if (!process.env.INTEROP_IGNORE_STDIN) {
        process.stdin.on('end', () => exit('stdin closed'));
        process.stdin.on('close', () => exit('stdin closed'));
        process.stdin.on('error', () => exit('stdin error'));
        process.stdin.resume();
    }
    return server;
}

function control(impl, req, res, url) {
    const route = req.method + ' ' + url.pathname;
    try {
        switch (route) {
            case 'POST /control/publish':
                return controlPublish(impl, res, url);
            case 'POST /control/expire':
                return sendJson(res, 200, {expired: impl.expire()});
            case 'GET /control/stats': {
                const s = impl.stats;
                return sendJson(res, 200, {
                    handshakes: s.handshakes,
                    connects: s.connects,
                    subscribes: s.subscribes,
                    unsubscribes: s.unsubscribes,
                    disconnects: s.disconnects,
                    publishes: s.publishes,
                    sessions: impl.sessionCount(),
                    subscriptions: impl.subscriptions()
                });
            }
            case 'GET /control/published':
                return sendJson(res, 200, impl.stats.published);
            default:
                return sendJson(res, 404, {error: 'unknown control endpoint ' + route});
        }
    } catch (e) {
        log('control failure', route, e);
        sendJson(res, 500, {error: String(e && e.stack || e)});
    }
}

function controlPublish(impl, res, url) {
    const q = url.searchParams;
    const channel = q.get('channel');
    const count = q.has('count') ? parseInt(q.get('count'), 10) : 1;
    const start = q.has('start') ? parseInt(q.get('start'), 10) : 1;
    // Optional: yield to the event loop after every `chunk` events, letting
    // the server flush held /meta/connect responses in between. 0 = never.
    const chunk = q.has('chunk') ? parseInt(q.get('chunk'), 10) : 0;
    // Optional: a payload field of `pad` characters, to set the event size.
    const padLen = q.has('pad') ? parseInt(q.get('pad'), 10) : 0;
    if (!Number.isInteger(padLen) || padLen < 0 || padLen > 1000000) {
        return sendJson(res, 400, {error: 'pad must be 0..1000000'});
    }
    const pad = 'x'.repeat(padLen);
    if (!channel || !channel.startsWith('/') || isMeta(channel) ||
        !Number.isInteger(count) || count < 0 || !Number.isInteger(start) ||
        !Number.isInteger(chunk) || chunk < 0) {
        return sendJson(res, 400, {error: 'need channel=/non/meta&count>=0&start=int[&chunk>=0]'});
    }
    let i = 0;
    const step = () => {
        const end = chunk > 0 ? Math.min(count, i + chunk) : count;
        const batch = [];
        for (; i < end; i++) {
            batch.push(makeEventData(start + i, pad));
        }
        impl.publish(channel, batch);
        if (i < count) {
            setImmediate(step);
        } else {
            sendJson(res, 200, {published: count});
        }
    };
    step();
}

module.exports = {
    MOUNT, TOKEN, TIMEOUT_MS, MAX_INTERVAL_MS, DEBUG,
    log, isMeta, isService, newStats, countIncoming, start
};
