'use strict';
// A Faye (NodeAdapter) Bayeux server mounted at /cometd/62.0 behind a
// bearer-token check. Faye's own error formats are kept. See README.md.

const faye = require('faye');
const lib = require('./lib');

if (lib.DEBUG) {
    faye.logger = {debug: console.error, info: console.error, warn: console.error, error: console.error};
}

const bayeux = new faye.NodeAdapter({
    mount: lib.MOUNT,
    // Faye's timeout is in seconds; it is also what the advice reports.
    timeout: lib.TIMEOUT_MS / 1000
});

// Faye exposes no public server-side API to publish without a client or to
// kill a session; the engine proxy (stable across 1.x) offers both.
const engine = bayeux._server._engine;

const stats = lib.newStats();
const sessions = new Set();
const subs = new Map(); // channel -> Set(clientId)

bayeux.on('handshake', clientId => {
    lib.log('session started', clientId);
    sessions.add(clientId);
});
// 'disconnect' fires for client disconnects, session timeouts and destroyClient.
bayeux.on('disconnect', clientId => {
    // A timeout (no connect for 2 x timeout) drops the events queued for the session.
    lib.log('session ended', clientId);
    sessions.delete(clientId);
});
bayeux.on('subscribe', (clientId, channel) => {
    if (!subs.has(channel)) {
        subs.set(channel, new Set());
    }
    subs.get(channel).add(clientId);
});
bayeux.on('unsubscribe', (clientId, channel) => {
    const set = subs.get(channel);
    if (set) {
        set.delete(clientId);
        if (set.size === 0) {
            subs.delete(channel);
        }
    }
});

bayeux.addExtension({
    // Faye runs every message through incoming extensions before any
    // validation (unknown clients included); request is null only for
    // in-process clients, which we do not use.
    incoming: (message, request, callback) => {
        if (request) {
            lib.countIncoming(stats, message);
            if (!lib.isMeta(message.channel) && !lib.isService(message.channel) && message.data !== undefined) {
                stats.published.push({channel: message.channel, data: message.data});
            }
        }
        callback(message);
    }
});

function handleBayeux(req, res) {
    bayeux.handle(req, res);
}

function expire() {
    const ids = Array.from(sessions);
    // destroyClient also unsubscribes and flushes a held /meta/connect (which
    // then completes with its already-built successful reply).
    ids.forEach(id => engine.destroyClient(id));
    return ids.length;
}

function subscriptions() {
    const result = {};
    for (const [channel, set] of subs) {
        result[channel] = set.size;
    }
    return result;
}

function publish(channel, dataArray) {
    // Straight into the engine: delivered events are {channel, data} only.
    // (bayeux.getClient().publish would add the local client's id/clientId.)
    for (const data of dataArray) {
        engine.publish({channel: channel, data: data});
    }
}

lib.start({
    name: 'faye ' + require('faye/package.json').version,
    handleBayeux, publish, expire, subscriptions, stats,
    sessionCount: () => sessions.size
});
