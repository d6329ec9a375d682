// media.mjs: a minimal UDP media client for the dashboard's media page test: a publisher and a
// subscriber of the session relay (docs/PROTOCOL.md §12.2, §12.5, §12.6, §12.9). Each is an
// initiator: START (STREAM_ID = the session id, MEDIA_TOKEN from the SDK's mediaToken(), padded
// to 256 bytes), the relay's START_ACK, START_CONFIRM (echoing the connection id); then the
// publisher sends DATA datagrams (sequence number, monotonic timestamp in ns, frequency 1e9,
// payload) and the subscriber counts the ones relayed to it. Every wait is bounded.
import { createSocket } from "node:dgram";

const FLAG = { DATA: 0x0000, START: 0x0100, START_ACK: 0x0101, START_CONFIRM: 0x0102, ERROR: 0x0103 };
const TLV = { STREAM_ID: 1, MEDIA_TOKEN: 2, ERROR_CODE: 3, PADDING: 4 };
const FIXED = 67;

/** A control frame: the 67-byte fixed part, the TLVs, and PADDING up to 256 bytes. */
function control(flag, connectionId, tlvs) {
  const fixed = Buffer.alloc(FIXED);
  fixed.writeUInt16LE(flag, 0);
  fixed[26] = 1; // version
  if (connectionId) connectionId.copy(fixed, 30);
  const parts = [fixed];
  for (const [type, value] of tlvs) {
    const head = Buffer.alloc(4);
    head.writeUInt16LE(type, 0);
    head.writeUInt16LE(value.length, 2);
    parts.push(head, value);
  }
  const used = parts.reduce((n, part) => n + part.length, 0);
  const padding = Math.max(0, 256 - used - 4);
  const head = Buffer.alloc(4);
  head.writeUInt16LE(TLV.PADDING, 0);
  head.writeUInt16LE(padding, 2);
  parts.push(head, Buffer.alloc(padding));
  return Buffer.concat(parts);
}

/**
 * Opens a relay tuple with `grant` (the SDK's MediaGrant) at 127.0.0.1:grant.port and resolves
 * once the relay has answered START_ACK and been sent START_CONFIRM.
 * @returns {Promise<{ socket: import("node:dgram").Socket, confirm: Buffer, address: string, received: number,
 *   errors: Error[], close(): void }>}
 */
async function handshake(grant, timeoutMs) {
  const socket = createSocket("udp4");
  await new Promise((done, fail) => { socket.once("error", fail); socket.bind(0, "127.0.0.1", done); });
  // A connected UDP socket reports an ICMP "port unreachable" (the relay gone) as an error; the
  // tests judge by what arrives, so it is kept, not thrown.
  const errors = [];
  socket.on("error", (error) => errors.push(error));
  socket.connect(grant.port, "127.0.0.1");
  await new Promise((done) => socket.once("connect", done));
  const streamId = Buffer.from(grant.streamId, "ascii");
  const start = control(FLAG.START, null, [[TLV.STREAM_ID, streamId], [TLV.MEDIA_TOKEN, Buffer.from(grant.token, "ascii")]]);
  let closed = false;
  const tuple = {
    socket, errors, received: 0, address: `127.0.0.1:${socket.address().port}`,
    close: () => { if (!closed) { closed = true; socket.close(); } },
  };
  const ack = await new Promise((done, fail) => {
    const timer = setTimeout(() => {
      clearInterval(retry);
      tuple.close();
      fail(new Error(`no START_ACK from the relay within ${timeoutMs} ms`));
    }, timeoutMs);
    const retry = setInterval(() => socket.send(start), 500);
    socket.on("message", function onMessage(datagram) {
      if (datagram.length < 26) return;
      const flag = datagram.readUInt16LE(0);
      if (flag === FLAG.ERROR) {
        clearTimeout(timer); clearInterval(retry); socket.off("message", onMessage); tuple.close();
        fail(new Error(`the relay refused START: ERROR ${datagram.length >= 73 ? datagram.readUInt16LE(71) : "?"}`));
      } else if (flag === FLAG.START_ACK) {
        clearTimeout(timer); clearInterval(retry); socket.off("message", onMessage);
        done(datagram);
      }
    });
    socket.send(start);
  });
  tuple.confirm = control(FLAG.START_CONFIRM, ack.subarray(30, FIXED), [[TLV.STREAM_ID, streamId]]);
  socket.on("message", (datagram) => {
    if (datagram.length >= 26 && datagram.readUInt16LE(0) === FLAG.DATA) tuple.received += 1;
  });
  socket.send(tuple.confirm);
  return tuple;
}

/** A subscriber: confirms (again every 200 ms until the first DATA) and counts the DATA relayed to it. */
export async function subscribe(grant, timeoutMs = 5_000) {
  const tuple = await handshake(grant, timeoutMs);
  const again = setInterval(() => { if (tuple.received === 0) tuple.socket.send(tuple.confirm); else clearInterval(again); }, 200);
  const close = tuple.close;
  tuple.close = () => { clearInterval(again); close(); };
  return tuple;
}

/**
 * A publisher: confirms three times, then sends one small DATA frame every `everyMs` (skipping
 * the sequence numbers in `skip`, which the relay counts as lost) until `close()`.
 */
export async function publish(grant, { everyMs = 20, skip = [] } = {}, timeoutMs = 5_000) {
  const tuple = await handshake(grant, timeoutMs);
  tuple.socket.send(tuple.confirm);
  tuple.socket.send(tuple.confirm);
  let sequence = 0n;
  tuple.sent = 0;
  const skipped = new Set(skip.map(BigInt));
  const timer = setInterval(() => {
    sequence += 1n;
    while (skipped.has(sequence)) sequence += 1n;
    const datagram = Buffer.alloc(26 + 64);
    datagram.writeUInt16LE(FLAG.DATA, 0);
    datagram.writeBigInt64LE(sequence, 2);
    datagram.writeBigInt64LE(process.hrtime.bigint(), 10);
    datagram.writeBigInt64LE(1_000_000_000n, 18);
    tuple.socket.send(datagram);
    tuple.sent += 1;
  }, everyMs);
  const close = tuple.close;
  tuple.close = () => { clearInterval(timer); close(); };
  return tuple;
}
