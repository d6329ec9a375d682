// consumer.ts: an application's use of the package, type-checked against the built
// declarations (dist/types) by test/unit/package.test.mjs, so a .d.ts that loses an export,
// widens an event or breaks narrowing on `type` fails the tests. Never run, only checked.
import {
  Client,
  LoudSyncError,
  PairingClient,
  isAccessRefusal,
  type ClientEvent,
  type ConnectionState,
  type MemberInfo,
  type Snapshot,
} from "loudsync-client";

export async function app(): Promise<void> {
  const client = new Client({
    url: "ws://127.0.0.1:8080/",
    sessionId: "party",
    device: { id: "phone-7", name: "Sara's phone", type: "client" },
  });
  const off = client.on("memberJoined", (event) => {
    const member: MemberInfo = event.member;
    const name: string = member.name;
    void name;
  });
  client.onAny((event: ClientEvent) => {
    switch (event.type) {
      case "message": {
        const from: string = event.from;
        void from;
        break;
      }
      case "resumeFailed": {
        const rejoining: boolean = event.rejoining;
        void rejoining;
        break;
      }
      case "handoffRequested":
        client.acceptHandoff(event.handoffId);
        break;
      default:
        break;
    }
  });
  try {
    await client.connect();
  } catch (error) {
    if (error instanceof LoudSyncError && error.kind === "rejected" && error.serverError) {
      const refused: boolean = isAccessRefusal(error.serverError);
      void refused;
    }
  }
  const state: ConnectionState = client.state();
  const snapshot: Snapshot = client.snapshot();
  void state;
  void snapshot;
  client.send({ track: "Blue in Green" });
  client.patchState({ volume: 7 }, client.sessionState().version);
  for await (const event of client.events()) {
    if (event.type === "kicked" || event.type === "sessionClosed") break;
  }
  off();
  await client.leave();
  void PairingClient;
}
