/**
 * machine-frames.ts: what the machine does with each server frame once joined (the Rust
 * `Machine::handle_session_message`, split out of machine.ts to keep both readable): the
 * member table (`member_list`, `member_joined`, `member_updated`, `member_left`), the
 * endings announced before the close (`kicked`, `session_closed`), latency from `pong`,
 * application messages, acks of numbered frames, the media token, and the handoff layer's
 * frames (`state`, `handoff_*`, `host_changed`), whose term rules live in handoff.ts.
 *
 * Events carry copies (members, states), never the machine's own objects.
 *
 * Frames that mean nothing once joined (a second `welcome`, the handshake's `token`,
 * `resumed`, `resume_failed`) are ignored, as in the Rust SDK.
 */
import type { Machine } from "./machine.js";
import type { ServerMessage } from "./protocol.js";
import type { MemberInfo } from "./types.js";

/** A copy of a member entry (the table's own entries are never handed out to be mutated). */
export function copyMember(member: MemberInfo): MemberInfo {
  return { ...member };
}

/**
 * A deep copy of JSON data from the wire, for an event: the application may edit what it is
 * given without editing the machine's own (as the Rust SDK's events own their values). The
 * decoder bounds the nesting (protocol.ts `MAX_NESTING`), so the copy cannot overflow.
 */
export function copyJson<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Handles one known server frame while connected. */
export function handleSessionMessage(m: Machine, now: number, message: ServerMessage, timestamp: number | undefined): void {
  switch (message.type) {
    case "member_list": {
      const members = message.members.map(copyMember);
      m.control.overlayOwn(m.ownId, members);
      const host = members.find((x) => x.isHost);
      if (host) {
        // A fresh list is the server's word on who hosts (decision 26).
        m.control.hostId = host.id;
        if (m.sessionInfo) m.sessionInfo = { ...m.sessionInfo, hostId: host.id };
      }
      m.table = members;
      m.bump();
      m.emit({ type: "memberList", members: members.map(copyMember) });
      return;
    }
    case "media_token": {
      const { token, role, streamId, port, expiresAt } = message;
      m.emit({ type: "mediaToken", grant: { token, role, streamId, port, expiresAt } });
      return;
    }
    case "member_joined": {
      const member = message.member;
      // A new array sharing the other entries: entries are never edited in place
      // (`editMembers` copies them first), so a join costs no copy of the whole table.
      const table = m.table.filter((x) => x.id !== member.id);
      if (member.isHost) {
        // The first host of a session created over HTTP.
        m.control.hostId = member.id;
        if (m.sessionInfo) m.sessionInfo = { ...m.sessionInfo, hostId: member.id };
        table.unshift(copyMember(member));
      } else {
        table.push(copyMember(member));
      }
      m.table = table;
      m.bump();
      m.emit({ type: "memberJoined", member: copyMember(member) });
      return;
    }
    case "member_updated": {
      const member = message.member;
      m.editMembers((table) => {
        const index = table.findIndex((x) => x.id === member.id);
        if (index >= 0) table[index] = copyMember(member);
        else if (member.isHost) table.unshift(copyMember(member));
        else table.push(copyMember(member));
      });
      m.bump();
      m.emit({ type: "memberUpdated", member: copyMember(member) });
      return;
    }
    case "member_left": {
      m.table = m.table.filter((x) => x.id !== message.memberId);
      m.bump();
      m.emit({ type: "memberLeft", memberId: message.memberId, reason: message.reason });
      return;
    }
    case "kicked":
      m.ending = { kind: "kicked", reason: message.reason };
      return;
    case "session_closed":
      m.ending = { kind: "sessionClosed", reason: message.reason };
      return;
    case "pong": {
      if (timestamp !== undefined && Number.isInteger(timestamp) && timestamp >= 0) {
        const ms = Math.max(m.unixMs(now) - timestamp, 0);
        m.lastLatency = ms;
        m.bump();
        m.emit({ type: "latency", ms });
      }
      return;
    }
    case "message":
      m.emit({ type: "message", from: message.from, data: message.data });
      return;
    case "ack":
      if (m.resumable) {
        m.outbox.acknowledge(message.seq);
        m.pump(now);
      }
      return;
    case "welcome":
    case "token":
    case "resumed":
    case "resume_failed":
      // A second `welcome` means nothing; the handshake's frames have none once connected.
      return;
    case "state": {
      const state = message.state;
      // A state that is not an object, or of a term below the highest seen, is dropped.
      if (!isObject(state) || !m.control.stateFrame(state, message.version, message.term)) return;
      m.bump();
      m.emit({
        type: "sessionState",
        state: copyJson(state),
        version: message.version,
        term: message.term,
        updatedBy: message.updatedBy,
      });
      return;
    }
    case "handoff_started": {
      const { handoffId, targetId } = message;
      m.control.pending = { kind: "started", handoffId, targetId };
      m.bump();
      m.emit({ type: "handoffStarted", handoffId, targetId });
      return;
    }
    case "handoff_request": {
      const { handoffId, fromId, version, term, timeoutMs } = message;
      const state = isObject(message.state) ? message.state : {};
      m.control.offered({ handoffId, fromId, state, version, term, timeoutMs });
      m.bump();
      m.emit({ type: "handoffRequested", handoffId, fromId, state: copyJson(state), version, term, timeoutMs });
      return;
    }
    case "handoff_ack": {
      const { handoffId, hostId, term } = message;
      m.control.acknowledged(handoffId, term);
      m.bump();
      m.emit({ type: "handoffAcknowledged", handoffId, hostId, term });
      return;
    }
    case "host_changed": {
      const { hostId, previousHostId, term, reason } = message;
      const table = m.table.map(copyMember);
      if (!m.control.hostChanged(m.ownId, table, hostId, previousHostId, term, reason)) {
        // A host_changed of an older term: dropped.
        return;
      }
      m.table = table;
      if (m.sessionInfo) m.sessionInfo = { ...m.sessionInfo, hostId };
      m.bump();
      m.emit({ type: "hostChanged", hostId, previousHostId, term, reason });
      m.syncRole();
      return;
    }
    case "handoff_failed": {
      const { reason, handoffId, targetId } = message;
      m.control.handoffFailed(reason, handoffId);
      m.bump();
      m.emit({ type: "handoffFailed", reason, handoffId, targetId });
      return;
    }
  }
}
