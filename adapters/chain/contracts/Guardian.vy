# pragma version ~=0.4.3
"""
@title PeerGrid pause guardian: an emergency stop that expires by itself
@custom:contract-name Guardian
@license Apache-2.0
@notice After hand-over the community's timelock is the `Settlement`
        contract's admin, so an emergency stop by vote would take days.
        This contract holds the settlement's admin role too, but its code
        only pauses and unpauses: the pauser (the operator, appointed and
        replaced by the timelock) pauses at once, and the pause lasts
        `pause_hours` (governed) at most. Once that time has passed,
        `lift` unpauses, called by anyone (`peergrid gov lift`); the pauser
        and the timelock may unpause earlier. A pause cannot be renewed while it lasts. A pause the
        timelock itself set on the settlement contract (by a vote) is not
        this contract's and `lift` leaves it alone.
@dev New, unaudited code.
"""


interface ISettlement:
    def pause(): nonpayable
    def unpause(): nonpayable
    def paused() -> bool: view


# Longest pause the members can allow [h] (two weeks).
MAX_PAUSE_HOURS: constant(uint256) = 336


settlement: public(immutable(ISettlement))
timelock: public(immutable(address))

# Who may pause (the operator); appointed by the timelock.
pauser: public(address)
# Longest pause [h]; governed by the timelock.
pause_hours: public(uint256)
# When this contract's pause ends [unix s]; 0 = no pause of this contract's.
paused_until: public(uint256)


event Paused:
    pauser: indexed(address)
    until: uint256


event Unpaused:
    caller: indexed(address)
    expired: bool


event PauserChanged:
    old_pauser: indexed(address)
    new_pauser: indexed(address)


event PauseHoursChanged:
    old_value: uint256
    new_value: uint256


@deploy
@payable
def __init__(settlement_: ISettlement, timelock_: address, pauser_: address, pause_hours_: uint256):
    """
    @param settlement_ The settlement contract; it must grant this contract
           its admin role (the hand-over).
    @param timelock_ The community's timelock.
    @param pauser_ The first pauser (the operator).
    @param pause_hours_ The longest pause [h], 1 to `MAX_PAUSE_HOURS`.
    """
    settlement = settlement_
    timelock = timelock_
    self.pauser = pauser_
    self._set_pause_hours(pause_hours_)


@external
def pause():
    """
    @dev Pause settlements and deposits for `pause_hours` (pauser only).
    """
    assert msg.sender == self.pauser, "guardian: caller is not the pauser"
    assert self.paused_until == 0, "guardian: already paused"
    until: uint256 = block.timestamp + self.pause_hours * 3600
    self.paused_until = until
    extcall settlement.pause()
    log Paused(pauser=msg.sender, until=until)


@external
def lift():
    """
    @dev Unpause once this contract's pause has expired (anyone).
    """
    until: uint256 = self.paused_until
    assert until != 0, "guardian: not paused by the guardian"
    assert block.timestamp >= until, "guardian: pause has not expired"
    self._unpause(True)


@external
def unpause():
    """
    @dev End this contract's pause early (the pauser or the timelock).
    """
    assert msg.sender == self.pauser or msg.sender == timelock, "guardian: caller may not unpause"
    assert self.paused_until != 0, "guardian: not paused by the guardian"
    self._unpause(False)


@external
@view
def expired() -> bool:
    """
    @dev Whether this contract's pause has expired and `lift` would unpause.
    """
    return self.paused_until != 0 and block.timestamp >= self.paused_until


@external
def set_pauser(new_pauser: address):
    """
    @dev Appoint the pauser (timelock only: an executed vote).
    """
    assert msg.sender == timelock, "guardian: caller is not the timelock"
    log PauserChanged(old_pauser=self.pauser, new_pauser=new_pauser)
    self.pauser = new_pauser


@external
def set_pause_hours(new_value: uint256):
    """
    @dev Change the longest pause [h] (timelock only: an executed vote).
         A pause already running keeps its end.
    """
    assert msg.sender == timelock, "guardian: caller is not the timelock"
    self._set_pause_hours(new_value)


@internal
def _unpause(expired: bool):
    self.paused_until = 0
    # the timelock may have unpaused the settlement directly meanwhile
    if staticcall settlement.paused():
        extcall settlement.unpause()
    log Unpaused(caller=msg.sender, expired=expired)


@internal
def _set_pause_hours(new_value: uint256):
    assert new_value >= 1 and new_value <= MAX_PAUSE_HOURS, "guardian: pause hours out of range"
    log PauseHoursChanged(old_value=self.pause_hours, new_value=new_value)
    self.pause_hours = new_value
