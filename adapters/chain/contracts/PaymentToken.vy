# pragma version ~=0.4.3
"""
@title PeerGrid payment token
@custom:contract-name PaymentToken
@license Apache-2.0
@notice ERC-20 with 6 decimals (1 token = 10**6 base units) in which PeerGrid
        participants pay for energy. Built from snekmate 0.1.2 modules: the
        ERC-20 logic, EIP-2612 `permit` and EIP-5267 `eip712Domain` come from
        `snekmate.tokens.erc20`, the owner role from `snekmate.auth.ownable`.
        Minting is restricted to the owner (this contract's own `mint`); the
        snekmate minter role is not exported, so nobody else can ever mint.
        There is no burn: the supply only grows, by `mint`.
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
    erc20.transfer_ownership,
)


# @dev Base units per token: 10**6 (the kernel's `market.units.TOKEN_DECIMALS`).
DECIMALS: constant(uint8) = 6

# @dev Version of the EIP-712 signing domain used by `permit`.
_EIP712_VERSION: constant(String[20]) = "1"


@deploy
def __init__(name_: String[25], symbol_: String[5]):
    """
    @dev The deployer becomes the owner, the only account that can mint.
    @param name_ The token name, at most 25 characters; also the
           EIP-712 domain name for `permit`.
    @param symbol_ The token symbol, at most 5 characters.
    """
    ownable.__init__()
    erc20.__init__(name_, symbol_, DECIMALS, name_, _EIP712_VERSION)


@external
def mint(to: address, amount: uint256):
    """
    @dev Creates `amount` base units and assigns them to `to`.
    @notice Only the owner can mint. `to` cannot be the zero address.
    @param to The receiver.
    @param amount The amount in base units (10**-6 token).
    """
    ownable._check_owner()
    erc20._mint(to, amount)
