# pragma version ~=0.4.3
"""
@title PeerGrid community timelock
@custom:contract-name Timelock
@license Apache-2.0
@notice snekmate 0.1.2's `timelock_controller`, unchanged, as a contract of
        its own. After hand-over it is the admin of the `Settlement`
        contract and the owner of the reward token, the membership and the
        parameters registry; its only proposer and executor is the
        community's `Governor`, so a governed change happens only when a
        members' vote passed and the delay (`get_minimum_delay`, itself
        changed only through the timelock) has run out.
        The community's fee account is this contract's own escrow in
        `Settlement`: it is spent only by an executed proposal too.
"""


from snekmate.auth import access_control
initializes: access_control

from snekmate.governance import timelock_controller
initializes: timelock_controller[access_control := access_control]

exports: timelock_controller.__interface__


@deploy
@payable
def __init__(
    minimum_delay_: uint256,
    proposers_: DynArray[address, 4],
    executors_: DynArray[address, 4],
    admin_: address,
):
    """
    @dev See snekmate's `timelock_controller.__init__`. PeerGrid deploys it
         with the deployer as temporary admin, grants the roles to the
         `Governor` and then has the deployer renounce the admin role
         (the hand-over).
    @param minimum_delay_ Initial minimum delay [s].
    @param proposers_ Accounts granted the proposer and canceller roles.
    @param executors_ Accounts granted the executor role.
    @param admin_ Optional temporary admin; the zero address for none.
    """
    access_control.__init__()
    timelock_controller.__init__(minimum_delay_, proposers_, executors_, admin_)
