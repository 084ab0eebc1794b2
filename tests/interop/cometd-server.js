'use strict';
// The CometD project's own Node.js Bayeux server (cometd-nodejs-server),
// mounted at /cometd/62.0 behind a bearer-token check. See README.md.

const cometd = require('cometd-nodejs-server');
const lib = require('./lib');

if (lib.DEBUG) {
    // The server's debug logging uses console.log; keep stdout for the port line.
    console.log = console.error;
}

const server = cometd.createCometDServer(Object.assign({
    timeout: lib.TIMEOUT_MS,
    logLevel: lib.DEBUG ? 'debug' : 'info'
}, lib.MAX_INTERVAL_MS > 0 ? {maxInterval: lib.MAX_INTERVAL_MS} : {}));

const stats = lib.newStats();
const sessions = new Map();
// Ids of sessions removed by /control/expire: replies still owed to them
// (a suspended /meta/connect) must look like "unknown client".
const expired = new Set();
// Messages of the HTTP request being processed synchronously; unknown-client
// replies are produced synchronously inside handle(), so this is reliable
// for them and lets us put the clientId back into the reply.
let currentMessages = null;

// INTEROP_META_CONNECT_DELIVERY_ONLY=1: deliver events only in /meta/connect replies (what the
// server's own ack extension switches on per session; there is no server option). By default
// the server drains a session's queue into every reply, subscribe and publish replies included.
const META_CONNECT_DELIVERY_ONLY = process.env.INTEROP_META_CONNECT_DELIVERY_ONLY === '1';

server.addListener('sessionAdded', session => {
    lib.log('session started', session.id);
    sessions.set(session.id, session);
    if (META_CONNECT_DELIVERY_ONLY) {
        session._metaConnectDeliveryOnly = true;
    }
});
server.addListener('sessionRemoved', session => {
    // Also on expiry (no connect for maxInterval): the events it held are gone.
    lib.log('session ended', session.id);
    sessions.delete(session.id);
});

function unknownClient(reply, clientId) {
    // Salesforce answers "403::Unknown client"; the stock server says
    // "402::session_unknown" and omits clientId. Rebuild the reply in
    // Salesforce's field order, keeping any other fields.
    const rest = Object.assign({}, reply);
    for (const k of Object.keys(reply)) {
        delete reply[k];
    }
    delete rest.successful;
    delete rest.error;
    delete rest.advice;
    reply.channel = rest.channel;
    reply.successful = false;
    reply.error = '403::Unknown client';
    if (reply.channel === '/meta/connect' || reply.channel === '/meta/handshake') {
        reply.advice = {reconnect: 'handshake', interval: 0};
    }
    Object.assign(reply, rest);
    if (clientId !== undefined) {
        reply.clientId = clientId;
    }
}

function clientIdFor(reply) {
    const msgs = currentMessages || [];
    const m = msgs.find(m => m && m.channel === reply.channel && m.id === reply.id) || msgs[0];
    return m ? m.clientId : undefined;
}

server.addExtension({
    incoming: (cometdServer, session, message, callback) => {
        // Only called for messages of known sessions (and handshakes), i.e.
        // client publishes the server actually accepts.
        if (!lib.isMeta(message.channel) && !lib.isService(message.channel)) {
            stats.published.push({channel: message.channel, data: message.data});
        }
        callback(undefined, true);
    },
    // Note: the server passes (server, session, session, message, cb); the
    // callback takes a boolean, the message is modified in place.
    outgoing: (cometdServer, sender, session, message, callback) => {
        if (message.error === '402::session_unknown') {
            unknownClient(message, clientIdFor(message));
        } else if (session && expired.has(session.id)) {
            if (message.channel === '/meta/disconnect' && message.successful === true && message.id === undefined) {
                // The server-side /meta/disconnect that session.disconnect()
                // queues: drop it, Salesforce sends nothing of the sort.
                return callback(undefined, false);
            }
            if (message.channel === '/meta/connect' && 'successful' in message) {
                unknownClient(message, session.id);
            }
        }
        callback(undefined, true);
    }
});

function handleBayeux(req, res) {
    // Parse the body ourselves (the server accepts a pre-parsed request.body)
    // so that stats see every message, including unknown-client ones, which
    // never reach server extensions' incoming().
    const chunks = [];
    req.on('data', c => chunks.push(c));
    req.on('end', () => {
        let messages;
        try {
            messages = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch (e) {
            res.statusCode = 400;
            return res.end();
        }
        (Array.isArray(messages) ? messages : [messages]).forEach(m => lib.countIncoming(stats, m));
        req.body = messages;
        currentMessages = Array.isArray(messages) ? messages : null;
        try {
            server.handle(req, res);
        } catch (e) {
            // e.g. a non-array body; the stock server answers 400 too.
            lib.log('bayeux failure:', String(e));
            if (!res.headersSent) {
                res.statusCode = 400;
                res.end();
            }
        } finally {
            currentMessages = null;
        }
    });
}

function expire() {
    const all = Array.from(sessions.values());
    for (const session of all) {
        expired.add(session.id);
        // Public API: removes the session (unsubscribing it) and queues a
        // server-side /meta/disconnect, which the extension above drops.
        session.disconnect();
        // Wake a suspended /meta/connect so it is answered now, with the
        // 403 (what the server's own /meta/disconnect handling does; there
        // is no public API for it).
        if (typeof session._flush === 'function') {
            session._flush();
        }
    }
    return all.length;
}

function subscriptions() {
    const result = {};
    for (const session of sessions.values()) {
        for (const channel of session.subscriptions) {
            result[channel.name] = (result[channel.name] || 0) + 1;
        }
    }
    return result;
}

function publish(channelName, dataArray) {
    const channel = server.createServerChannel(channelName);
    for (const data of dataArray) {
        channel.publish(null, data);
    }
}

lib.start({
    name: 'cometd-nodejs-server ' + require('cometd-nodejs-server/package.json').version,
    handleBayeux, publish, expire, subscriptions, stats,
    sessionCount: () => sessions.size
});
