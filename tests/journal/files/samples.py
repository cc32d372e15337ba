"""Small exports in each broker's shape, written from docs/file-import.md's columns (no broker's real file)."""

TRADOVATE_ORDERS = (
    "orderId,Account,Order ID,B/S,Contract,Product,Product Description,avgPrice,filledQty,Fill Time,"
    "lastCommandId,Status,_priceFormat,_priceFormatType,_tickSize,spanAdjustedPrice,Limit Price,Stop Price,"
    "Quantity,Type,Text\n"
    "210001,DEMO123456,210001, Buy,MESZ5,MES,Micro E-mini S&P 500,6850.25,2,11/25/2025 04:38:24,210001, Filled,"
    "-2,0,0.25,,,,2,Market,\n"
    "210002,DEMO123456,210002, Sell,MESZ5,MES,Micro E-mini S&P 500,6852.50,2,11/25/2025 04:41:10,210002, Filled,"
    "-2,0,0.25,,6852.50,,2,Limit,\n"
    "210003,DEMO123456,210003, Buy,MNQZ5,MNQ,Micro E-mini Nasdaq-100,,0,,210003, Canceled,-2,0,0.25,,,,1,Limit,\n"
)

TRADOVATE_PERFORMANCE = (
    "symbol,_priceFormat,_priceFormatType,_tickSize,buyFillId,sellFillId,qty,buyPrice,sellPrice,pnl,"
    "boughtTimestamp,soldTimestamp,duration\n"
    "MESZ5,-2,0,0.25,9001,9002,1,6850.25,6852.50,$11.25,11/25/2025 04:38:24,11/25/2025 04:41:10,2min 46sec\n"
    "MESZ5,-2,0,0.25,9001,9003,1,6850.25,6849.00,$(6.25),11/25/2025 04:38:24,11/25/2025 04:45:02,6min 38sec\n"
)

TRADOVATE_POSITION_HISTORY = (
    "Position ID,Timestamp,Trade Date,Net Pos,Net Price,Bought,Avg. Buy,Sold,Avg. Sell,Account,Contract,Product,"
    "Product Description,_priceFormat,_priceFormatType,_tickSize,Pair ID,Buy Fill ID,Sell Fill ID,Paired Qty,"
    "Buy Price,Sell Price,P/L,Currency,Bought Timestamp,Sold Timestamp\n"
    "5550001,11/25/2025 04:45:02,2025-11-25,0,,2,6850.25,2,6850.75,DEMO123456,MESZ5,MES,Micro E-mini S&P 500,"
    "-2,0,0.25,8801,9001,9002,1,6850.25,6852.50,11.25,USD,11/25/2025 04:38:24,11/25/2025 04:41:10\n"
    "5550001,11/25/2025 04:45:02,2025-11-25,0,,2,6850.25,2,6850.75,DEMO123456,MESZ5,MES,Micro E-mini S&P 500,"
    "-2,0,0.25,8802,9001,9003,1,6850.25,6849.00,-6.25,USD,11/25/2025 04:38:24,11/25/2025 04:45:02\n"
)

NINJATRADER_EXECUTIONS = (
    "Instrument,Action,Quantity,Price,Time,ID,E/X,Position,Order ID,Name,Commission,Rate,"
    "Account display name,Connection,\n"
    "MES JUN26,Buy,1,7200.75,4/27/2026 6:05:02 AM,a1b2c3d4e5,Entry,1 L,ord-1,Entry,0.62 $,1,Sim101,Playback,\n"
    "MES JUN26,Sell,1,7203.25,4/27/2026 6:09:40 AM,a1b2c3d4e6,Exit,-,ord-2,Exit,0.62 $,1,Sim101,Playback,\n"
)

# The same two fills from a PC set to a European locale: `;`, decimal commas, day first.
NINJATRADER_EUROPEAN = (
    "Instrument;Action;Quantity;Price;Time;ID;E/X;Position;Order ID;Name;Commission;Rate;"
    "Account display name;Connection\n"
    "MES JUN26;Buy;1;7200,75;27/04/2026 6:05:02;a1b2c3d4e5;Entry;1 L;ord-1;Entry;0,62 $;1;Sim101;Playback\n"
    "MES JUN26;Sell;1;7203,25;27/04/2026 6:09:40;a1b2c3d4e6;Exit;-;ord-2;Exit;0,62 $;1;Sim101;Playback\n"
)

PROJECTX_TRADES = (
    "Id,ContractName,EnteredAt,ExitedAt,EntryPrice,ExitPrice,Fees,PnL,Size,Type,TradeDay,TradeDuration,"
    "Commissions\n"
    "88112233,MESZ5,10/01/2025 21:13:23 +02:00,10/01/2025 21:20:05 +02:00,6712.50,6715.00,1.48,12.50,1,Long,"
    "10/01/2025 00:00:00 -05:00,00:06:42,\n"
    "88112234,MNQZ5,10/01/2025 21:31:00 +02:00,10/01/2025 21:33:30 +02:00,24810.25,24800.00,0.74,41.00,2,Short,"
    "10/01/2025 00:00:00 -05:00,00:02:30,\n"
)

IBKR_ACTIVITY = b"""<?xml version="1.0" encoding="UTF-8"?>
<FlexQueryResponse queryName="journal" type="AF">
<FlexStatements count="1">
<FlexStatement accountId="U1234567" fromDate="20260302" toDate="20260306" period="LastBusinessWeek">
<Trades>
<Trade accountId="U1234567" currency="USD" assetCategory="STK" symbol="AAPL" dateTime="20260304;093107"
 quantity="100" tradePrice="182.35" ibCommission="-1.00" ibCommissionCurrency="USD" multiplier="1"
 ibExecID="0001f4e5.6576a1b2.01.01" transactionID="3311" tradeID="551" ibOrderID="412" levelOfDetail="EXECUTION" />
<Trade accountId="U1234567" currency="USD" assetCategory="STK" symbol="AAPL" dateTime="20260304;093107"
 quantity="100" tradePrice="182.35" ibOrderID="412" levelOfDetail="ORDER" />
<Trade accountId="U1234567" currency="USD" assetCategory="FUT" symbol="MESH6" dateTime="20260304;100244"
 quantity="-2" tradePrice="5812.25" ibCommission="-1.24" multiplier="5"
 ibExecID="0001f4e5.6576a1b2.01.02" ibOrderID="413" levelOfDetail="EXECUTION" />
</Trades>
</FlexStatement>
</FlexStatements>
</FlexQueryResponse>
"""

IBKR_CONFIRMS = b"""<?xml version="1.0" encoding="UTF-8"?>
<FlexQueryResponse queryName="confirms" type="TCF">
<FlexStatements count="1">
<FlexStatement accountId="U1234567" fromDate="20260304" toDate="20260304">
<TradeConfirms>
<TradeConfirm accountId="U1234567" currency="USD" assetCategory="STK" symbol="AAPL" dateTime="20260304;093107"
 quantity="100" price="182.35" commission="-1.00" commissionCurrency="USD" multiplier="1"
 execID="0001f4e5.6576a1b2.01.01" orderID="412" levelOfDetail="EXECUTION" />
</TradeConfirms>
</FlexStatement>
</FlexStatements>
</FlexQueryResponse>
"""

MT5_REPORT = """<!DOCTYPE html>
<html><head><title>12345678: Trade History Report</title></head><body>
<table>
<tr><th colspan="14"><div><b>Trade History Report</b></div></th></tr>
<tr><th colspan="3">Name:</th><th colspan="11"><b>Jane Trader</b></th></tr>
<tr><th colspan="3">Account:</th><th colspan="11"><b>12345678 (USD, Example-Server, real, Hedge)</b></th></tr>
<tr><th colspan="14"><div><b>Positions</b></div></th></tr>
<tr><td>Time</td><td>Position</td><td>Symbol</td><td>Type</td><td>Volume</td><td>Price</td><td>S / L</td>
<td>T / P</td><td>Time</td><td>Price</td><td>Commission</td><td>Swap</td><td>Profit</td></tr>
<tr><td>2026.03.04 10:00:01</td><td>5001</td><td>EURUSD</td><td>buy</td><td>0.10</td><td>1.08250</td><td></td>
<td></td><td>2026.03.04 11:30:45</td><td>1.08410</td><td>-0.70</td><td>0.00</td><td>16.00</td></tr>
<tr><td colspan="14"></td></tr>
<tr><th colspan="14"><div><b>Deals</b></div></th></tr>
<tr><td>Time</td><td>Deal</td><td>Symbol</td><td>Type</td><td>Direction</td><td>Volume</td><td>Price</td>
<td>Order</td><td>Commission</td><td>Fee</td><td>Swap</td><td>Profit</td><td>Balance</td><td>Comment</td></tr>
<tr><td>2026.03.01 09:00:00</td><td>4001</td><td></td><td>balance</td><td></td><td></td><td></td><td></td>
<td>0.00</td><td>0.00</td><td>0.00</td><td>10 000.00</td><td>10 000.00</td><td>deposit</td></tr>
<tr><td>2026.03.04 10:00:01</td><td>7001</td><td>EURUSD</td><td>buy</td><td>in</td><td>0.10</td><td>1.08250</td>
<td>6001</td><td>- 0.35</td><td>0.00</td><td>0.00</td><td>0.00</td><td>9 999.65</td><td></td></tr>
<tr><td>2026.03.04 11:30:45</td><td>7002</td><td>EURUSD</td><td>sell</td><td>out</td><td>0.10</td><td>1.08410</td>
<td>6002</td><td>- 0.35</td><td>0.00</td><td>0.00</td><td>16.00</td><td>10 015.30</td><td></td></tr>
<tr><td></td><td></td><td></td><td></td><td></td><td></td><td></td><td></td><td>- 0.70</td><td>0.00</td><td>0.00</td>
<td>16.00</td><td>10 015.30</td><td></td></tr>
<tr><td colspan="14"></td></tr>
<tr><td colspan="3">Total Net Profit:</td><td>15.30</td><td colspan="3">Gross Profit:</td><td>16.00</td></tr>
</table></body></html>
"""
