// Count-only consumer on the CometD JavaScript client (npm `cometd` + `cometd-nodejs-client`),
// for benches/side_by_side/run.sh. Usage: node cometd_count.mjs PORT CHANNEL N
// Exits 0 after N events on CHANNEL (the script polls the server's stats to see it subscribed).
import {createRequire} from 'node:module';
import {pathToFileURL} from 'node:url';

// The packages live in tests/interop/node_modules (one lockfile with the interop servers).
const interop = createRequire(new URL('../../tests/interop/package.json', import.meta.url));
const load = name => import(pathToFileURL(interop.resolve(name)).href);
const {adapt} = await load('cometd-nodejs-client');
const {CometD} = await load('cometd');

adapt();
const [port, channel, nArg] = process.argv.slice(2);
const n = parseInt(nArg, 10);
const cometd = new CometD();
cometd.configure({
    url: `http://127.0.0.1:${port}/cometd/62.0`,
    requestHeaders: {Authorization: 'Bearer test-token'},
    logLevel: 'warn'
});
let count = 0;
const fail = msg => {
    console.error(msg);
    process.exit(1);
};
cometd.handshake(reply => {
    if (!reply.successful) {
        fail(`handshake failed: ${JSON.stringify(reply)}`);
    }
    cometd.subscribe(channel, () => {
        if (++count === n) {
            console.log(`received ${count}`);
            process.exit(0);
        }
    }, sub => {
        if (!sub.successful) {
            fail(`subscribe failed: ${JSON.stringify(sub)}`);
        }
    });
});
