"""Natural English sentences, shipped in the package: held-out text outside the sentence grammar.

Why: every other sentence in this project comes from lpo_speech.synthetic.sentences, a grammar of a few
templates and word lists, so a model trained and tested on it can gain on the grammar without
gaining on English. These sentences were written by hand as ordinary prose on twenty everyday
topics (48 each): 5-20 words, US spelling, no digits (the few numbers are small and spelled out, and
clock times and years are avoided because Whisper writes those as digits, which the project's WER
normalization counts as errors), no hyphenated words, no URLs, a few common names. Every character is
a letter, a space, an apostrophe or one of . , ? ! ; : so espeak-ng and piper speak every word.

Pools (``pool(name)``): sentence ``i`` of the whole list (``SENTENCES``) goes to ``dev`` when
``i % 6 == 2``, to ``test`` when ``i % 6 == 5`` and to ``train`` otherwise, so each pool holds every
topic (8 dev, 8 test and 32 train sentences per topic: 640 / 160 / 160). The rule
depends only on a sentence's position, so the list is append-only: a sentence edited or removed in
the middle moves others between pools and changes every held-out set made from them. ``dev`` and
``test`` are held out (OOD evaluation: ``make-asr-data --ood``, make-tts-data's ``ood_*`` prompts);
only ``train`` may be mixed into training data (``--natural-share``, ``mix_natural``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from lpo_speech.errors import UserError

POOLS = ("train", "dev", "test")
MIN_WORDS, MAX_WORDS = 5, 20
# What every sentence is made of: words of letters (apostrophes inside), basic punctuation, one
# final mark. Checked by tests/data/test_natural.py.
SPEAKABLE = re.compile(r"[A-Z][A-Za-z']*(?:[,;:]? [A-Za-z][A-Za-z']*)*[.?!]")

TOPICS: tuple[tuple[str, str], ...] = (
    ("weather", """
The forecast says it will rain all afternoon, so bring a coat.
It was so windy this morning that my umbrella turned inside out.
We had the first frost of the year last night.
The sky cleared up just before sunset and the clouds turned pink.
Snow fell quietly through the night and covered the whole town.
I love the smell of the air right after a summer storm.
The fog was so thick that we could barely see the road.
It has been unusually warm for this time of year.
Thunder rolled across the valley while the children hid under a blanket.
The weather changed so quickly that nobody was ready for it.
A cold wind blew in from the north and the temperature dropped.
By noon the sun had melted most of the ice on the pavement.
We decided to stay indoors because the storm was getting worse.
The spring rain made the fields look bright and green again.
Do you think it will be sunny enough for a picnic tomorrow?
The heat wave lasted for almost three weeks in August.
Dark clouds gathered over the hills as we hurried home.
A rainbow appeared over the lake when the shower ended.
The roads were icy, so the buses ran slowly all morning.
Autumn leaves swirled around our feet as we walked to the station.
It rained so hard that the gutters overflowed onto the sidewalk.
The weather report was wrong again, and we got soaked.
Light snow is expected overnight, with clear skies by morning.
She checked the sky one more time before hanging the laundry outside.
Summer evenings here stay light until very late.
The hailstones were as big as marbles and dented several cars.
We watched the lightning from the safety of the kitchen window.
The air felt heavy and damp, as if a storm was coming.
After weeks of drought, the farmers were grateful for the rain.
The wind died down in the evening and the sea grew calm.
Winter arrived early this year and stayed until the end of March.
The morning mist lifted slowly from the river.
I can never decide whether to wear a jacket on days like this.
It was the kind of bright, cold day that makes you want to walk for hours.
Because of the snow, the school sent everyone home at lunch.
The clouds moved so fast that the shadows raced across the fields.
We had to cancel the outdoor concert because of the thunderstorm.
The old man claimed his knee could predict the rain.
A warm breeze carried the scent of flowers through the open door.
The puddles froze overnight and the children slid across them in the morning.
When the sun finally came out, everyone went straight to the park.
I hope the weather holds for the wedding on Saturday.
The storm knocked out the power for most of the evening.
Spring came late, but the blossoms were worth the wait.
The river rose quickly after the heavy rain in the mountains.
They say the coming winter will be milder than the last one.
It is too hot to do anything except sit in the shade.
The first warm day of the year always puts people in a good mood.
"""),
    ("cooking", """
Stir the sauce gently so it does not stick to the bottom of the pan.
My grandmother never measured anything when she baked bread.
Let the dough rest for an hour before you shape it.
The soup needs a little more salt and a squeeze of lemon.
He burned the toast again while reading the morning paper.
Chop the onions finely and fry them until they turn golden.
We made pancakes for breakfast and ate them with fresh berries.
The recipe calls for two eggs, but I only have one left.
Could you taste this and tell me if it needs more pepper?
She roasted the vegetables with garlic, olive oil and rosemary.
The smell of fresh coffee filled the whole apartment.
Always wash your hands before you start cooking.
This cake is best served warm with a spoonful of cream.
I forgot to take the chicken out of the freezer this morning.
The rice was perfectly cooked, soft but not sticky.
He learned to make pasta from scratch during a trip to Italy.
Keep an eye on the milk so it does not boil over.
We grilled fish on the beach and ate it with our fingers.
Her apple pie won first prize at the village fair.
Add the flour slowly, a spoonful at a time, while you whisk.
The kitchen was a mess after we finished baking cookies.
There is nothing better than a bowl of hot soup on a cold evening.
My brother eats the same cereal every single morning.
Please put the leftovers in the fridge before you go to bed.
The bread rose beautifully and had a crisp golden crust.
I like my eggs scrambled, with a little butter and chives.
Slice the tomatoes thinly and arrange them on a large plate.
The curry was much spicier than I expected.
We ran out of sugar halfway through the recipe.
He always adds a pinch of cinnamon to his hot chocolate.
The oven takes a while to heat up, so turn it on early.
Fresh herbs make even the simplest dish taste wonderful.
She packed sandwiches, fruit and cold tea for the long drive.
Do you prefer your steak rare or well done?
The stew tastes even better the next day.
I cut my finger while peeling potatoes for dinner.
Let the cookies cool on a rack before you store them.
The children helped decorate the cake with colorful sprinkles.
He spent the whole afternoon making a big pot of tomato sauce.
Lunch was a simple salad of beans, cucumber and fresh mint.
Our neighbor brought us a jar of homemade jam.
Cover the pot and let it simmer on low heat for an hour.
The waiter recommended the mushroom soup, and he was right.
I never understood why people put pineapple on pizza.
The lemons from our tree are sour but very juicy.
Mix the dry ingredients in one bowl and the wet ones in another.
Dinner will be ready as soon as the potatoes are soft.
We celebrated her birthday with a chocolate cake and candles.
"""),
    ("travel", """
Our flight was delayed by three hours because of the fog.
I always pack far more clothes than I need.
The train wound slowly through the mountains toward the coast.
Please keep your passport somewhere safe during the trip.
We missed the last bus and had to walk back to the hotel.
The taxi driver knew every shortcut in the city.
She has wanted to visit Japan since she was a little girl.
The ferry crossing was rough, and half the passengers felt seasick.
Do you know which platform the train to London leaves from?
We rented a small car and drove along the coast for a week.
The hotel room was tiny, but the view from the balcony was amazing.
He fell asleep on the plane and woke up just before landing.
Traveling by night train is slower, but you save a night in a hotel.
The customs officer asked us where we were staying.
Our luggage arrived a day after we did.
They spent their honeymoon walking through small villages in Spain.
The road was closed, so we had to take a long detour.
I like to sit by the window so I can watch the landscape.
Remember to check the timetable before you leave the house.
The airport was crowded with families going on holiday.
We got lost in the old town but found a lovely little square.
The guide showed us the castle and told us stories about its ghosts.
Our tickets were cheaper because we booked them months in advance.
The bus stopped at every tiny village along the way.
He forgot his charger in the hotel and had to buy a new one.
The long drive passed quickly because we sang the whole way.
Would you mind watching my bag while I buy a coffee?
We arrived at the campsite just as it was getting dark.
She speaks enough French to order food and ask for directions.
The trip took longer than planned, but nobody complained.
The cruise ship was as large as a small town.
I prefer traveling by train because I can read on the way.
The border crossing took almost an hour in the heat.
They cycled across the country and slept in tents.
Our guide warned us not to drink the water from the tap.
We watched the sunrise from the top of the old tower.
The conductor checked our tickets and wished us a pleasant journey.
My suitcase was too heavy, so I had to pay an extra fee.
The mountain road had sharp bends and no guard rails.
We spent the afternoon wandering through the museums of Paris.
The motorway was jammed with cars heading to the beach.
She keeps a small notebook of every place she has visited.
The station was closed for repairs, so buses replaced the trains.
We found a quiet inn at the edge of the forest.
Have you ever been to Canada in the winter?
Every time I travel, I bring back a small stone from the beach.
The pilot announced that we would land a little early.
Traveling with small children requires a lot of patience.
"""),
    ("work", """
The meeting ran over, so I missed my lunch break.
Could you send me the report before the end of the day?
She was promoted after only a year with the company.
Our office moved to a bigger building across the river.
He works from home on Mondays and Fridays.
The printer jammed again right before the presentation.
I have so many emails that I do not know where to start.
The new manager wants everyone to arrive on time every morning.
We finished the project two days ahead of schedule.
He asked his boss for a raise and was told to wait until spring.
The interview went well, and they called her back the next day.
Please remember to lock the door when you leave the office.
The team celebrated the launch with pizza and cake.
I need to finish these slides before the client arrives.
Her job involves a lot of travel and long hours.
The company is hiring several engineers this year.
He quit his job to open a small bookshop in town.
Our department has a meeting every Tuesday morning.
She writes her to do list on paper every evening.
The deadline was moved, which gave us some breathing room.
I spent the whole afternoon on the phone with customers.
Could we move our call to later this afternoon?
The factory closed for a week to repair its machines.
The coffee machine in the break room is broken again.
Working night shifts made it hard for him to sleep.
The contract needs to be signed by both parties.
She prefers to work in a quiet corner away from the noise.
Our supervisor praised the team for their hard work.
I forgot my badge and had to wait for someone to let me in.
The budget was cut, so the project had to be smaller.
He keeps a plant on his desk to make the office feel brighter.
Everyone was tired after the long week of audits.
The new software made our daily work much easier.
She handed in her notice and left at the end of the month.
The training session taught us how to use the new system.
Please make sure all the files are saved on the shared drive.
The morning commute takes me almost an hour each way.
He trained the new staff and answered their questions patiently.
The office is empty on Friday afternoons.
I need a few more days to finish the analysis.
The shop opens early and closes late in the summer.
Our team won an award for the best design of the year.
She organized the conference almost entirely on her own.
The workers went on strike to demand better pay.
My boss said I could leave early if I finished the letters.
We had a long discussion about how to reduce costs.
He is good at explaining complicated ideas in simple words.
The office party was more fun than anyone expected.
"""),
    ("school", """
The students listened quietly while the teacher read the poem aloud.
I never understood algebra until I had a patient tutor.
The school library stays open until late in the afternoon.
She studied late every night before her final exams.
Our class went on a field trip to the science museum.
Please raise your hand if you have a question.
He forgot his homework on the kitchen table again.
The exam was harder than anyone had expected.
Learning a new language takes time and daily practice.
The children learned about volcanoes and built a model in class.
My favorite subject in school was always history.
The teacher wrote the answer on the board in large letters.
The university campus is beautiful in the autumn.
She took notes on everything the professor said.
The bell rang, and the students rushed out into the yard.
Reading aloud helped him remember the new words.
They formed a study group to prepare for the chemistry test.
The school play was a great success with the parents.
He was nervous before his first day at a new school.
The professor gave us an extra week to finish the essay.
I learned to swim during the summer after first grade.
Our geography teacher had traveled to every continent.
The students built a robot for the regional competition.
She read every book on the summer reading list.
Practice the piano for half an hour every day, and you will improve.
The classroom windows looked out over the football field.
He got a scholarship to study medicine abroad.
We had to memorize a long poem for English class.
The children planted seeds and watched them grow on the windowsill.
My sister helps younger students with their reading after school.
The lecture hall was so warm that half the class fell asleep.
She finally passed her driving test on the third try.
The school bus picks up the children at the end of our road.
Asking questions is the best way to learn something new.
Our teacher made mathematics feel like solving puzzles.
The graduation ceremony was held outside under a big tent.
He stayed after class to ask about his grade.
The kids practiced their spelling words during breakfast.
The new school year begins at the start of September.
I still remember the name of my first teacher.
She explained the experiment step by step so everyone could follow.
The students voted for a new class president.
We learned how plants turn sunlight into food.
He wants to study architecture after he finishes school.
The test results will be posted on the notice board.
Our school has a small garden where we grow vegetables.
The tutor suggested that I read more newspapers in English.
After the lesson, the children drew pictures of what they had learned.
"""),
    ("family", """
My parents have been married for several decades.
We visit my grandparents every Sunday after church.
Her little brother follows her everywhere she goes.
The whole family gathered at the table for dinner.
My aunt tells the funniest stories about her childhood.
He called his mother to wish her a happy birthday.
Our cousins are coming to stay with us for the holidays.
The twins look alike, but their personalities are very different.
My father taught me how to ride a bicycle in the park.
She inherited her grandmother's love of gardening.
The baby finally fell asleep after an hour of crying.
We have a family tradition of making soup on the first cold day.
My sister and I used to share a bedroom when we were young.
His uncle runs a small hardware store in the village.
The kids spent the whole afternoon building a fort in the living room.
Grandpa fell asleep in his chair while watching the news.
Our family photo album is full of embarrassing pictures.
She moved across the country to be closer to her parents.
My mother always knows when something is bothering me.
The children argued about who would sit in the front seat.
We surprised my father with a party for his retirement.
Her son just started walking, and he is into everything now.
My grandparents met at a dance when they were very young.
The family dog sleeps at the foot of my bed.
He promised his daughter that he would be home for dinner.
We all helped my brother move into his new apartment.
My niece wants to be an astronaut when she grows up.
Family dinners at our house are always loud and cheerful.
She keeps every letter her father ever wrote to her.
The older children looked after the younger ones.
Every summer we drove to the lake to visit my uncle.
My mother taught me to always say thank you.
His parents were proud when he graduated from college.
We lost touch with our relatives after they moved abroad.
Their youngest daughter is learning to play the violin.
I still have the quilt that my great grandmother made.
My brother borrowed my car and returned it with an empty tank.
Our family reunion brought together people from four countries.
She reads a bedtime story to her children every night.
Grandma's kitchen always smelled of cinnamon and fresh bread.
The boys share everything, even their clothes.
My father fixes everything himself and never calls a plumber.
We spent Christmas at my aunt's house in the country.
Her parents did not approve of her plan to become an actor.
The children made breakfast in bed for their mother.
My cousin and I were best friends growing up.
It is hard to find a time when the whole family is free.
Their grandmother lived to a very great age.
"""),
    ("health", """
You should drink plenty of water when you have a fever.
The doctor told him to rest his knee for a few weeks.
I have had a headache since I woke up this morning.
She goes for a run every morning before work.
Getting enough sleep is just as important as eating well.
The nurse took my temperature and checked my blood pressure.
He broke his arm falling off a ladder in the garden.
My throat is sore, so I will stay home today.
The pharmacy on the corner is open late on weekdays.
Regular exercise can help you feel less stressed.
She made an appointment with the dentist for next Tuesday.
Take this medicine twice a day with food.
He has been allergic to peanuts since he was a child.
The hospital waiting room was full of coughing people.
Walking for half an hour a day is good for your heart.
I think I caught a cold from my colleague.
The doctor listened to my chest and said my lungs were clear.
Stretching before you exercise helps prevent injuries.
She stopped drinking coffee because it kept her awake at night.
My back hurts from sitting at the desk all day.
The flu spread quickly through the whole school.
He wears glasses for reading but not for driving.
You should put some ice on that swollen ankle.
The surgeon said the operation had gone very well.
Eating more vegetables made me feel much better.
Wash your hands often during the cold season.
She twisted her ankle while hiking on a rocky trail.
The medicine made him feel sleepy all afternoon.
My grandfather walks to the market every day to stay fit.
I need to renew my prescription before the weekend.
The ambulance arrived within minutes of the call.
Too much sugar is bad for your teeth.
He lost a lot of weight after he started cycling to work.
The doctor recommended that I take a few days off.
She practices yoga to help with her back pain.
The clinic is closed on public holidays.
I feel dizzy when I stand up too quickly.
He was in the hospital for a week after the accident.
Try to keep a regular sleep schedule, even on weekends.
The dentist said I need to floss more often.
A good laugh can be the best medicine.
Her cough finally went away after two weeks.
We took our son to the doctor because of a rash.
Wear sunscreen, even when the sky is cloudy.
The physical therapist gave me exercises to do at home.
I have been trying to eat less bread and more fruit.
She fainted in the heat and had to sit in the shade.
Most colds get better on their own within a week.
"""),
    ("shopping", """
I need to buy milk, eggs and bread on the way home.
The market is busiest on Saturday mornings.
She found a beautiful dress in the sale.
Do you accept credit cards, or is it cash only?
These shoes are comfortable, but they are too expensive.
The shop assistant helped me find the right size.
We compared prices at three stores before buying the fridge.
He always forgets his shopping bags at home.
The supermarket was out of fresh bread by the afternoon.
Could I return this jacket if it does not fit?
The price of vegetables has gone up a lot this year.
She saves money by cooking at home instead of eating out.
The queue at the checkout was longer than usual.
I bought a second hand bicycle for very little money.
The bakery sells out of croissants early in the morning.
He paid for lunch and refused to let me give him anything.
The bank charged me a fee for using another machine.
We are saving up for a trip to the mountains next year.
This store has the best selection of cheese in town.
I keep a list so that I do not buy things I do not need.
She bargained with the seller until he lowered the price.
The mall was packed with people buying gifts.
My wallet was stolen while I was on the bus.
The receipt shows that I was charged twice.
The florist made a lovely bouquet of tulips for my mother.
He spends far too much money on books.
The new shop on the high street sells handmade soap.
Please keep the change, and thank you for your help.
We bought a new sofa because the old one was falling apart.
The farmer's market has the freshest strawberries.
She reads every label before she puts something in her basket.
The discount only applies to items with a red sticker.
I ordered a lamp, but they sent me a clock instead.
The cashier counted the coins twice before handing me my change.
Rent takes up almost half of my monthly income.
He opened a savings account for his daughter.
The toy shop window was full of colorful kites.
We ran out of money before the end of the trip.
The butcher recommended a cut of beef for the stew.
I always check the expiry date on the milk.
The furniture arrived in pieces, with no instructions.
She keeps track of every penny she spends.
The store will deliver the washing machine on Thursday.
I paid the electricity bill just in time.
Buying in bulk is cheaper if you have space to store it.
The antique shop had a wonderful old clock in the window.
The price tag had fallen off, so nobody knew how much it cost.
They sell fresh fish straight from the boats every morning.
"""),
    ("animals", """
The cat sleeps in the sunny spot by the window all afternoon.
A family of ducks crossed the road, and all the cars stopped.
Our dog barks at the mailman every single morning.
Bees are busy collecting pollen from the lavender.
The owl hooted softly in the tall pine tree.
We saw a deer standing at the edge of the forest.
The horse trotted over to the fence for an apple.
Squirrels are burying nuts all over the garden.
The puppy chewed through the leg of the kitchen chair.
A robin built its nest in the hedge by the front door.
The cows were lying down, which some say means rain is coming.
Dolphins swam alongside the boat for several minutes.
My cat brings me small gifts that I would rather not receive.
The fox slipped through a gap in the fence at night.
The parrot can say hello and whistle a short tune.
Geese fly south in large groups every autumn.
The rabbit twitched its nose and hopped back into the bushes.
Frogs were croaking loudly by the pond after the rain.
The dog waited patiently by the door for its owner.
A spider spun an enormous web across the garden path.
The elephants walked slowly toward the waterhole.
Our goldfish has lived for much longer than anyone expected.
The sheep huddled together to keep warm in the storm.
He trained his dog to fetch the newspaper.
The kitten was afraid of its own reflection.
A hawk circled high above the open field.
The zoo has a new baby giraffe.
Bats came out at dusk and flew over the lake.
The chickens follow the farmer wherever he goes.
Whales can be seen off the coast in late summer.
My neighbor's dog howls whenever an ambulance passes.
The butterflies gathered on the flowering bush.
The bear searched for berries along the riverbank.
We adopted an old cat from the animal shelter.
The mouse ran under the fridge when we turned on the light.
Ants marched in a line toward the spilled sugar.
The lion yawned and went back to sleep in the shade.
A woodpecker tapped on the old oak tree all morning.
The dog rolled in the mud right after its bath.
Swallows return to the barn every spring.
The turtle moved so slowly that we lost patience watching it.
Seagulls stole the chips right out of my hand.
The children fed the goats at the petting farm.
Wolves were howling somewhere far off in the mountains.
The cat knocked a glass off the table and looked proud of itself.
Our dog is afraid of thunder and hides under the bed.
The monkeys chattered noisily in the treetops.
A single swan glided across the still water.
"""),
    ("city", """
The streets were quiet early on Sunday morning.
A new coffee shop opened on the corner of our street.
The traffic was terrible because of the roadworks downtown.
The city park is full of joggers in the evening.
They are building a tall apartment block where the cinema used to be.
The neighbors complained about the noise from the party.
The underground was so crowded that I could not move my arms.
Street musicians played jazz in the square all afternoon.
The old factory has been turned into an art gallery.
There is a lovely view of the city from the top of the hill.
He lives on the top floor of a building with no elevator.
The streetlights came on one by one as the sun went down.
Parking in the center of town is almost impossible.
The market square fills with stalls every Thursday.
A siren wailed somewhere in the distance.
The library downtown has just been renovated.
Our street is lined with tall old chestnut trees.
The bus was late, so I walked to work instead.
Pigeons gathered around the old man feeding them bread.
The city council plans to build more bike lanes next year.
The fountain in the main square was turned off for the winter.
We live close to the station, so the trains wake us up.
The shops on the main street close early on Sundays.
The night market sells food from all over the world.
Our neighborhood has a friendly feeling that I love.
The taxi dropped us off at the wrong end of the street.
A crowd gathered to watch the fireworks over the river.
The museum is free on the first Sunday of every month.
The new bridge made the trip across town much shorter.
Graffiti covered the walls of the abandoned warehouse.
The subway station was closed because of a flood.
Our building has a small courtyard with a single tree.
There is always someone walking a dog in the morning.
The city feels completely different after midnight.
He rides his scooter to work, weaving through the traffic.
The tourists took pictures of everything, even the trash cans.
Rents in the city center have doubled in a few years.
The corner shop is open all night, which is very handy.
Our apartment looks out over a busy intersection.
The police closed the road for the parade.
Most people in the city do not even know their neighbors.
The smell of fresh bread drifts out of the bakery every morning.
The town hall clock has been wrong for years.
We found a quiet bench by the canal to eat our lunch.
The crossing light turned green, and everyone hurried across.
The stadium is just a short walk from our house.
The old part of the city has narrow streets and small houses.
A delivery truck was blocking the whole street.
"""),
    ("hobbies", """
He has been collecting stamps since he was a boy.
We play cards with our neighbors every Friday night.
She knits sweaters for all her grandchildren.
I joined a choir last year and I love singing with others.
The chess club meets in the library on Wednesday evenings.
He goes fishing at the lake every weekend in summer.
Painting helps me relax after a long day.
She is learning to play the guitar from videos.
We went bowling and I was terrible at it.
My brother spends hours building model airplanes.
They cheered loudly when their team scored the winning goal.
I try to swim a few lengths before breakfast.
The band practices in the garage, much to the neighbors' dismay.
She took up photography after she retired.
He runs in the park every morning, rain or shine.
Our football team lost the final by a single point.
I enjoy doing crossword puzzles on the train.
The concert was sold out weeks before the show.
He plays the drums so loudly that the windows shake.
We spent the afternoon flying kites on the hill.
My friends and I started a small book club.
She practices the violin for an hour every evening.
The tennis match went on for almost four hours.
He loves baking bread on Sunday mornings.
We went dancing at the club until late at night.
The marathon runners crossed the finish line exhausted but happy.
I have been learning to draw portraits.
The orchestra played a beautiful piece by Mozart.
They go camping in the mountains every summer.
My grandfather taught me how to play chess.
She rides her horse through the woods every afternoon.
We watched the match at a crowded pub.
He is trying to learn a few magic tricks for his daughter's party.
The jazz singer had a deep and smoky voice.
I like to go hiking when the leaves start to change.
The basketball game went into overtime.
She has a large collection of old records.
We went to see the new play at the small playhouse downtown.
He carves small animals out of wood.
The cycling race passes right by our house.
I sometimes write short poems in my notebook.
The skiing was excellent after the fresh snow.
My sister plays piano in a small jazz band.
The children built a huge sandcastle on the beach.
He spends his weekends repairing old clocks.
The audience gave the dancers a standing ovation.
We learned to sail on a small lake near our town.
She sews her own clothes from patterns she designs.
"""),
    ("home", """
The kitchen sink is blocked again.
Could you take the rubbish out before you leave?
We painted the bedroom a pale shade of blue.
The washing machine makes a strange noise when it spins.
I spent the morning cleaning the windows.
The heating broke down in the middle of winter.
He vacuumed the carpet and dusted the shelves.
Our roof leaks whenever it rains heavily.
The dishwasher needs to be emptied.
We finally hung the pictures in the hallway.
She rearranged the furniture in the living room again.
The front door squeaks every time someone opens it.
I keep losing my keys somewhere in the house.
The light bulb in the bathroom needs changing.
We are having the kitchen renovated next month.
The laundry has been sitting in the basket for days.
He fixed the dripping tap with a new washer.
Please put your shoes by the door when you come in.
The attic is full of boxes we have never unpacked.
Our new apartment gets a lot of sun in the afternoon.
The curtains were faded from years of sunlight.
I need to iron a shirt for the interview tomorrow.
The fridge is almost empty, so we should go shopping.
We moved into a small house with a big garden.
The stairs creak loudly in the middle of the night.
She made the bed and opened the windows to let in fresh air.
The garage is so full that the car does not fit.
The doorbell rang while I was in the shower.
Someone left the tap running all night.
We need to buy a new mattress soon.
The cat scratched the arm of the new sofa.
He mowed the lawn and trimmed the hedges.
The house was cold, so we lit a fire in the fireplace.
I finally cleared out the cupboard under the stairs.
The smoke alarm went off when I burned the toast.
Our landlord promised to repair the broken window.
The walls in this apartment are very thin.
We swept the leaves from the porch.
The bathroom mirror fogs up after every shower.
The children's toys were scattered across the floor.
I like to listen to the radio while I do the dishes.
The electrician came to fix the flickering lights.
We spent the weekend painting the garden fence.
The old house had high ceilings and large windows.
She folded the towels and put them in the closet.
There is a draft coming from under the door.
The basement floods every spring.
Home is wherever my family is.
"""),
    ("science", """
The astronomers discovered a new planet far beyond our solar system.
Water boils at a lower temperature high in the mountains.
The new phone has a much better camera than the old one.
Scientists are studying how bees find their way home.
My computer crashed and I lost the whole document.
The moon causes the tides to rise and fall.
Engineers are designing cars that can drive themselves.
Please remember to back up your files regularly.
Light from the sun takes a few minutes to reach the earth.
The laboratory was filled with strange machines.
He built a small radio from a kit when he was a boy.
The experiment failed, but they learned a lot from it.
Plants grow toward the light, even indoors.
My laptop battery only lasts a few hours now.
The telescope allowed us to see the rings of Saturn.
Vaccines have saved millions of lives.
The internet has changed the way we read the news.
The satellite sends pictures of the weather every hour.
Our brains use a surprising amount of energy.
He studies how glaciers move and melt.
The rocket launch was delayed because of strong winds.
Could you help me connect the printer to the network?
Sound travels faster through water than through air.
The inventor spent years perfecting his design.
Electric cars are becoming more common in our town.
The museum has a skeleton of a huge dinosaur.
My phone automatically updates itself at night.
The doctor used a microscope to look at the sample.
Scientists believe the universe is still expanding.
Solar panels on the roof provide most of our electricity.
The app tells me how many steps I walk each day.
Lightning is much hotter than the surface of the sun.
She is researching new ways to recycle plastic.
The password must be changed every few months.
A magnet will pick up iron but not aluminum.
The volcano erupted after being quiet for centuries.
He explained how the engine works using a simple drawing.
The storm damaged the power lines across the region.
Earthquakes are common in this part of the world.
The robot can sort packages faster than any person.
Our bodies are made up mostly of water.
I turned it off and on again, and it worked.
The data showed a clear link between sleep and memory.
The spacecraft sent back photos of the far side of the moon.
Salt water freezes at a lower temperature than fresh water.
The new bridge was designed to survive strong earthquakes.
He repairs old radios and televisions as a hobby.
The study found that music can help patients recover.
"""),
    ("culture", """
The castle was built many centuries ago by a powerful duke.
The museum has a large collection of ancient coins.
Her paintings are full of bright colors and strange shapes.
The old church has beautiful stained glass windows.
People have been telling this story for hundreds of years.
The festival celebrates the end of the harvest.
The statue in the square honors a famous poet.
The ancient Romans built roads that are still used today.
We listened to an old folk song about a sailor and the sea.
The gallery was showing photographs of the city a century ago.
The library holds letters written by the king himself.
The temple was carved directly into the side of the mountain.
Every spring the town holds a parade with music and costumes.
He wrote a book about the history of his village.
The opera was sung in Italian, but the story was easy to follow.
The ruins of the old abbey stand on a hill above the river.
The tradition of lighting candles goes back many generations.
The painter worked on that portrait for almost a decade.
Historians still argue about what caused the war.
The costumes in the museum were worn by actors long ago.
The ceremony ended with a song that everyone knew.
Archaeologists found pottery buried beneath the old market.
The sculptor used marble from a quarry nearby.
The city walls once protected the town from invaders.
The dancers wore traditional dress embroidered with flowers.
She translated ancient poems into modern English.
The monument was damaged during the storm and repaired last year.
Many languages borrow words from each other.
The palace gardens are open to visitors in summer.
The old map showed sea monsters in the corners.
He studies music from different parts of the world.
The museum guide spoke about the life of the artist.
This dish has been cooked the same way for centuries.
The tapestry tells the story of a famous battle.
The library was founded by a wealthy merchant.
The festival of lights draws visitors from far away.
Her grandfather carved the wooden doors of the village church.
The play tells the story of a family during hard times.
The choir sang in the cathedral on Christmas Eve.
Ancient people used the stars to find their way at sea.
The museum closed for a year while they restored the paintings.
Folk tales often teach children a lesson.
The architect wanted the building to look like a ship.
The old theater on the square is now a cinema.
She was the first woman in her town to go to university.
The exhibition was so popular that it was extended.
Every culture has its own stories about the moon.
The castle walls are thick enough to drive a cart along the top.
"""),
    ("feelings", """
I was so nervous that my hands were shaking.
She smiled when she heard the good news.
He felt lonely after his best friend moved away.
Thank you so much for your help yesterday.
I am really sorry that I forgot your birthday.
They were thrilled to hear that the baby had arrived.
Please do not be angry with me; I did my best.
It is fine to feel sad sometimes.
He was proud of himself for finishing the race.
I cannot tell you how happy I am to see you.
She was disappointed that nobody came to her party.
Don't worry, everything will be all right.
He laughed so hard that he had tears in his eyes.
I feel much calmer after a long walk.
She was embarrassed when she tripped on the stairs.
We were relieved to hear that everyone was safe.
He gets grumpy when he has not had breakfast.
I was surprised by how kind the strangers were.
She cried at the end of the film.
Being with old friends always makes me feel at home.
He was jealous of his brother's new bicycle.
I am grateful for everything you have done for me.
She felt a little scared walking home alone in the dark.
They were bored by the long speech.
It was the happiest day of my life.
He tried to hide his disappointment, but we could tell.
I was worried when you did not answer your phone.
She felt confident after practicing her speech many times.
What a wonderful surprise to find you here!
He was too shy to ask her to dance.
I hope you feel better soon.
We were all exhausted after the long journey.
She forgave him, but she did not forget.
I felt a wave of relief when the plane landed.
He was furious when he found out the truth.
It is nice to be appreciated.
She was homesick during her first month abroad.
I am so excited about our trip next week.
He apologized for being rude at dinner.
They felt at peace sitting by the quiet lake.
I did not mean to hurt your feelings.
She was amazed by the view from the mountain.
He felt guilty for eating the last piece of cake.
Congratulations on your new job!
I miss the long summer evenings of my childhood.
She was nervous but excited on her first day.
We had a big argument, but we made up the next day.
Kindness costs nothing and means everything.
"""),
    ("restaurants", """
Could we have a table by the window, please?
The waiter brought us the menu and a basket of bread.
I would like the soup of the day, please.
This restaurant is always full on Friday nights.
Could we have the bill, please?
The pasta was delicious, but the portion was small.
We waited almost an hour for our food.
The chef came out to ask how we liked the meal.
Do you have any vegetarian dishes?
The cafe on the corner makes the best hot chocolate.
He spilled his wine all over the white tablecloth.
We ordered too much food and took half of it home.
The service was slow, but the staff were very friendly.
I always order the same thing when I come here.
The restaurant has a lovely terrace overlooking the harbor.
Could I have a glass of water, please?
The dessert menu looked so good that we ordered three.
We celebrated our anniversary at a small French restaurant.
The coffee here is strong and the cakes are homemade.
The waitress remembered our order from last time.
There was a long line outside the new noodle bar.
He sent the steak back because it was overcooked.
I am allergic to nuts; does this dish contain any?
We shared a large plate of seafood by the sea.
The owner greeted every guest by name.
The cafe was warm and cozy on a rainy afternoon.
Would you like to see the wine list?
The soup arrived cold, so we asked them to heat it up.
They serve breakfast until noon on weekends.
We left a generous tip because the waiter was so kind.
The pizza came straight out of a wood fired oven.
I think I will have the fish with roasted potatoes.
The tea room serves scones with cream and jam.
We booked a table for the whole family on Saturday evening.
The food was good, but the music was far too loud.
The little diner by the highway is open all night.
Can we order dessert now, or should we wait?
The restaurant closed after the owner retired.
He asked for extra cheese on his burger.
The menu changes every week depending on the season.
We had lunch in a tiny cafe with only four tables.
The chef's special was a spicy fish stew.
The kids ordered ice cream before their main course.
The waiter recommended a local wine that was excellent.
Breakfast at that hotel was the best part of our stay.
The street food was cheap and absolutely delicious.
Do you take reservations, or should we just come early?
The cafe smelled of coffee, cinnamon and warm bread.
"""),
    ("books", """
I could not put the book down until I had finished it.
The film was much better than the novel it was based on.
She reads at least one book every week.
The story takes place in a small fishing village.
He fell asleep halfway through the movie.
The ending of the book was a complete surprise.
We went to the cinema to see the new animated film.
The library has a great collection of mystery novels.
The main character is a detective who hates solving crimes.
I read that poem in school and never forgot it.
The author signed copies of her book at the bookstore.
The documentary was about life at the bottom of the ocean.
My grandmother loved the old films of her youth.
The book was so long that I gave up after three chapters.
The actors in that series are all excellent.
He is writing a novel about his time as a sailor.
The movie was so scary that I watched it through my fingers.
We listened to an audiobook during the long drive.
The children's book was full of beautiful illustrations.
I prefer reading real books to reading on a screen.
The film won several awards last year.
She always reads the last page of a book first.
The story is about a boy who finds a dragon's egg.
The cinema was almost empty on a Tuesday afternoon.
He quotes lines from his favorite films all the time.
The sequel was not as good as the original.
Reading before bed helps me fall asleep.
The novel was translated into dozens of languages.
The film crew spent months shooting in the desert.
The bookstore has a comfortable corner with armchairs.
I have read that book so many times the cover fell off.
The plot was confusing, but the music was lovely.
She writes short stories in her spare time.
The poet read her work aloud to a small crowd.
We stayed up late watching old comedies.
The book club chose a classic novel this month.
The villain of the story turned out to be the narrator.
Have you seen the film that everyone is talking about?
The magazine publishes a new short story every month.
The director likes to film in black and white.
His first book was rejected by many publishers.
The story made me laugh and cry at the same time.
The library lends out films as well as books.
I borrowed a cookbook from the library and copied three recipes.
The movie theater sells the best popcorn in town.
Her diary tells the story of a year at sea.
The actor forgot his lines but improvised brilliantly.
The fairy tale begins in a dark and quiet forest.
"""),
    ("garden", """
The tomatoes are finally turning red on the vine.
We planted a row of sunflowers along the fence.
The roses need to be pruned before the spring.
Slugs ate most of the lettuce during the night.
She waters the garden every evening when it is dry.
The apple tree produced more fruit than we could eat.
He dug a small pond at the bottom of the garden.
The weeds grow faster than anything we plant.
The farmer harvested the wheat before the rain came.
Our vegetable patch gives us beans all summer long.
The tulips came up early because of the warm weather.
We pick blackberries from the hedges in late summer.
The compost heap is full of kitchen scraps and leaves.
The greenhouse keeps the peppers warm in the cold months.
My grandfather grows the biggest pumpkins in the village.
The soil here is heavy clay and hard to dig.
The cherry blossoms only last for a week or two.
He built raised beds so he would not have to bend so much.
The lavender attracts bees and butterflies all summer.
The farmer drove his tractor slowly down the lane.
We planted an oak tree when our daughter was born.
The strawberries were sweet and warm from the sun.
The hedge needs trimming before it blocks the path.
Potatoes should be stored in a cool, dark place.
The orchard is full of pear and plum trees.
The frost killed the young plants we put out too early.
The farm has cows, pigs and a very noisy rooster.
She grows herbs in pots on her kitchen windowsill.
The field was full of bright yellow flowers in May.
The gardener raked the leaves into large piles.
Our neighbor gives us eggs from her chickens.
The vines were heavy with grapes at the end of summer.
It is best to water plants in the early morning.
The onions are drying in the shed.
He sowed the carrot seeds in neat straight lines.
The old farmhouse has a garden full of wild flowers.
The harvest was poor this year because of the drought.
We share an allotment with two other families.
The ivy has climbed all the way up the chimney.
The sheep graze on the hills above the farm.
The peas are ready when the pods are plump.
She cuts fresh flowers from the garden for the table.
The lawn turned brown during the long dry summer.
The gardener covered the delicate plants with cloth before the frost.
The barn smelled of hay and old wood.
We grew so many zucchini that we gave most of them away.
The scarecrow did not scare a single bird.
Digging in the garden is my favorite way to relax.
"""),
    ("outdoors", """
The waves crashed against the rocks below the cliffs.
We climbed to the top of the mountain and watched the clouds below us.
The river was so clear that we could see the fish.
The tide comes in very quickly on this beach.
We followed the trail through the woods to a small waterfall.
The lake was perfectly still in the early morning.
He caught a large trout in the stream.
The path along the cliffs is steep and narrow.
We collected shells on the beach at low tide.
The forest was silent except for the sound of our footsteps.
The snow on the peaks sparkled in the sunlight.
We swam in the cold mountain lake and shivered afterward.
The canyon was deeper than I had imagined.
The lighthouse has guided ships safely for a very long time.
We rowed across the lake to the little island.
The desert is freezing at night and burning hot by day.
The campfire crackled while we told stories under the stars.
The valley was covered in wildflowers in early summer.
The boat rocked gently as the sun went down.
We got caught in the rain halfway up the hill.
The ocean looked gray and angry before the storm.
The hikers stopped to rest by a small stream.
The sand was so hot that we had to run to the water.
The cave was cold and dark and full of echoes.
We watched the fishing boats come back into the harbor.
The waterfall was loud enough to drown out our voices.
The marsh is home to many different kinds of birds.
He sailed alone around the island in a small boat.
The trail was muddy after days of rain.
From the top of the dunes we could see the whole bay.
The glacier has shrunk a lot in recent years.
We pitched our tent on a flat spot near the river.
The stars were incredibly bright far from the city lights.
The surfers waited patiently for the perfect wave.
A cold mist hung over the moor all morning.
The river flows all the way down to the sea.
We found a quiet spot on the rocks to eat our sandwiches.
The jungle was hot, humid and full of strange noises.
The beach was empty except for a man and his dog.
The mountain hut served hot soup to tired climbers.
The sunset turned the whole sky orange and purple.
We paddled our canoe down the slow, winding river.
The pine forest smelled wonderful after the rain.
The cliffs are home to thousands of nesting seabirds.
We walked along the shore until the lights of the town appeared.
The island can only be reached by boat.
The wind on the summit nearly knocked us over.
There is nothing like the sound of waves to help you sleep.
"""),
    ("everyday", """
Could you call me back when you have a moment?
Let's meet at the entrance of the park at noon.
I will be a little late, so please start without me.
Have you seen my glasses anywhere?
Don't forget to turn off the lights when you go out.
What time does the post office open on Saturdays?
Would you like to come over for dinner on Friday?
Please speak a little slower; I did not catch that.
I think we should leave now to avoid the traffic.
Can you remind me to buy a birthday card tomorrow?
Excuse me, is this seat taken?
We should probably get some sleep before the early start.
Let me know if there is anything I can do to help.
I will pick you up from the station after work.
Could you hold the door for me, please?
Why don't we take a short break and get some fresh air?
I am not sure, but I think the shop is closed today.
Please text me when you get home safely.
It might be a good idea to bring an extra sweater.
Do you know where I can find a pharmacy around here?
I am going to the bakery; do you want anything?
If you need anything, just knock on my door.
We could go to the beach if the weather is nice.
How was your day at work?
Remember to water the plants while I am away.
Try to get there early, because it fills up quickly.
Where did you put the scissors?
It is getting late, so I should head home.
Would you mind turning the music down a little?
I have an appointment in the morning, but I am free after lunch.
Let's decide where to go on holiday this summer.
Please wipe your feet before you come inside.
Can I borrow your pen for a second?
I am sorry, but I have to cancel our plans tonight.
Could you pass the salt, please?
We need to leave the house early tomorrow morning.
Let's try the new place around the corner.
What are you doing this weekend?
I am going to bed early tonight; I am exhausted.
Don't worry about the dishes; I will do them later.
Are you sure you locked the front door?
Could you read this and tell me what you think?
I left a note for you on the kitchen table.
The keys are hanging on the hook by the door.
Shall we take the scenic route home?
Please let me know by Thursday whether you can come.
I will save you a seat near the front.
It was lovely to see you; we should do this more often.
"""),
)

SENTENCES: tuple[str, ...] = tuple(line for _, block in TOPICS for line in block.strip().splitlines())


def pool_of(index: int) -> str:
    """The pool of ``SENTENCES[index]`` (see the module docstring)."""
    return "dev" if index % 6 == 2 else "test" if index % 6 == 5 else "train"


def pool(name: str) -> list[str]:
    """The sentences of one pool, in list order (the same on every machine)."""
    if name not in POOLS:
        raise UserError(f"unknown natural sentence pool {name!r} (choose from {', '.join(POOLS)})")
    return [s for i, s in enumerate(SENTENCES) if pool_of(i) == name]


def held_out(name: str, seed: int) -> list[str]:
    """The ``dev`` or ``test`` pool in a seeded order (``random.Random(f"ood:{seed}:{name}")``): the
    order of every out-of-domain set made from it, so a prefix mixes all topics."""
    if name not in ("dev", "test"):
        raise UserError(f"held-out natural sentences come from the dev or test pool, not {name!r}")
    texts = pool(name)
    random.Random(f"ood:{seed}:{name}").shuffle(texts)
    return texts


def topic_of(sentence: str) -> str | None:
    """The topic block a sentence was written under (None for a sentence not in the list)."""
    for name, block in TOPICS:
        if sentence in block.strip().splitlines():
            return name
    return None


def check_share(share: float, what: str = "--natural-share") -> float:
    if not 0.0 <= share <= 1.0:
        raise UserError(f"{what} {share} outside [0, 1]")
    return float(share)


def mix_natural(texts: Sequence[str], ids: Sequence[str], share: float, seed: int) -> list[str]:
    """``texts`` with each item replaced, with probability ``share``, by a sentence of the ``train`` pool.

    Whether item ``ids[j]`` is replaced is drawn from ``random.Random(f"natural:{seed}:{id}")``, so the
    grammar items that stay are the items of the same id without mixing, and a prefix of ``texts``
    mixes as the prefix of the mixed list (``--limit`` keeps working). Replacements follow one seeded
    shuffle of the pool, cycling when more items are replaced than the pool holds (640 sentences):
    then natural sentences repeat in training, which is the price of a larger share."""
    check_share(share)
    if len(texts) != len(ids):
        raise ValueError(f"{len(texts)} texts for {len(ids)} ids")
    if share == 0.0:
        return list(texts)
    order = pool("train")
    random.Random(f"natural-order:{seed}").shuffle(order)
    out, k = [], 0
    for text, item_id in zip(texts, ids):
        if random.Random(f"natural:{seed}:{item_id}").random() < share:
            out.append(order[k % len(order)])
            k += 1
        else:
            out.append(text)
    return out
