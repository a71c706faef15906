# pragma version ~=0.4.3
"""
@title PeerGrid reward token
@custom:contract-name RewardToken
@license Apache-2.0
@notice The DePIN incentive: an ERC-20 with 6 decimals minted for energy
        that producers deliver inside the microgrid. Built from snekmate
        0.1.2 (`snekmate.tokens.erc20` with EIP-2612 `permit`,
        `snekmate.auth.ownable`). Only minters appointed by the owner can
        mint, and the owner can never appoint itself: the deployer's own
        minter role, which snekmate grants at construction, is revoked in
        the constructor. The owner appoints the `Settlement` contract, which
        mints at its configured rate and per-interval cap.
        Ownership moves with `ownable`'s `transfer_ownership`, which (unlike
        snekmate's ERC-20 variant) hands over no minter role.
"""


from ethereum.ercs import IERC20
implements: IERC20

from ethereum.ercs import IERC20Detailed
implements: IERC20Detailed

from snekmate.auth import ownable
initializes: ownable

from snekmate.tokens import erc20
initializes: erc20[ownable := ownable]


exports: (
    erc20.name,
    erc20.symbol,
    erc20.decimals,
    erc20.totalSupply,
    erc20.balanceOf,
    erc20.allowance,
    erc20.transfer,
    erc20.approve,
    erc20.transferFrom,
    erc20.permit,
    erc20.nonces,
    erc20.DOMAIN_SEPARATOR,
    erc20.eip712Domain,
    erc20.owner,
    erc20.mint,
    erc20.set_minter,
    erc20.is_minter,
    ownable.transfer_ownership,
)


# @dev Base units per token: 10**6.
DECIMALS: constant(uint8) = 6

# @dev Version of the EIP-712 signing domain used by `permit`.
_EIP712_VERSION: constant(String[20]) = "1"


@deploy
def __init__(name_: String[25], symbol_: String[5]):
    """
    @dev The deployer becomes the owner, which appoints minters but is
         not one.
    @param name_ The token name, at most 25 characters; also the EIP-712
           domain name for `permit`.
    @param symbol_ The token symbol, at most 5 characters.
    """
    ownable.__init__()
    erc20.__init__(name_, symbol_, DECIMALS, name_, _EIP712_VERSION)
    erc20.is_minter[msg.sender] = False
    log erc20.RoleMinterChanged(minter=msg.sender, status=False)
