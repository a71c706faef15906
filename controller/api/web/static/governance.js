/* PeerGrid governance page: the members, values and proposals come as a fragment (htmx,
 * parts/governance); a member votes on an open proposal by signing the EIP-712 Ballot of the
 * governor's domain (GET .../governance: ballot_domain, ballot_types) with the browser's
 * wallet (eth_signTypedData_v4), and the server relays it on-chain. A refusal (403 not a
 * member, 409 already voted or closed, 422 bad signature, 502 relay failed) is shown with its
 * reason. */
(function () {
  "use strict";
  const SUPPORT = { against: 0, for: 1, abstain: 2 };  // the governor's numbering

  function el(id) { return document.getElementById(id); }
  function msg(text, bad) {
    const p = el("vote-msg");
    p.textContent = text;
    p.className = bad ? "error" : "ok-line";
  }

  async function vote(button) {
    const pid = Number(button.dataset.proposal);
    const choice = button.dataset.vote;
    const group = button.closest(".vote");
    for (const b of group.querySelectorAll("button")) b.disabled = true;
    msg("Sign your ballot (" + choice + " proposal " + pid + ") in your wallet…", false);
    try {
      const me = PG.me();
      const eth = PG.wallet();
      const gov = await PG.api("/governance");
      const typed = {
        types: { EIP712Domain: gov.ballot_types.EIP712Domain, Ballot: gov.ballot_types.Ballot },
        primaryType: "Ballot",
        domain: gov.ballot_domain,
        message: { proposalId: String(pid), support: String(SUPPORT[choice]), voter: me.address },
      };
      const accounts = await eth.request({ method: "eth_requestAccounts" });
      if (!accounts.length || accounts[0].toLowerCase() !== me.address.toLowerCase()) {
        throw new Error("the wallet's account is not the one signed in (" + me.address + ")");
      }
      const signature = await eth.request({ method: "eth_signTypedData_v4", params: [me.address, JSON.stringify(typed)] });
      const out = await PG.api("/governance/proposals/" + pid + "/ballots", {
        method: "POST", json: { voter: me.address, support: choice, signature: signature },
      });
      const p = out.proposal;
      msg("Your vote " + choice + " on proposal " + pid + " is recorded in block " + out.block_number
          + " (for " + p.votes_for + ", against " + p.votes_against + ", abstain " + p.votes_abstain + ").", false);
      document.body.dispatchEvent(new CustomEvent("pg:governance"));
    } catch (e) {
      const why = e instanceof PG.ApiError ? e.message + " (" + e.status + " " + e.code + ")"
        : (e && e.message ? e.message : String(e)) + (e && e.code === 4001 ? " (declined in the wallet)" : "");
      msg("Your vote was not recorded: " + why, true);
      for (const b of group.querySelectorAll("button")) b.disabled = false;
      // the server's refusal reflects the chain now (a vote cast elsewhere, a closed vote)
      if (e instanceof PG.ApiError) document.body.dispatchEvent(new CustomEvent("pg:governance"));
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    el("part-governance").addEventListener("click", (e) => {
      const button = e.target.closest("button[data-vote]");
      if (button) vote(button);
    });
  });
})();
